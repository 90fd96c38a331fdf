"""Training speed on one GPU: samples/s and the data-wait share of tf_efficientnet_lite0 (depthwise frozen) with bf16
mixed precision, at 64 and 224 px, with and without channels_last and torch.compile, and the data pipelines that can
feed it.

    PYTHONPATH=src python benchmarks/gpu_train.py            # on a CUDA machine: about 5 minutes, 6 at most
    PYTHONPATH=src python benchmarks/gpu_train.py --smoke    # on CPU, tiny sizes: checks that it runs

Needs torch and timm; uses Accelerate (mixed precision, prepared model, optimizer and loaders) and masterkey's own
``training_loop``, fused AdamW choice and layout placement when they import (``PYTHONPATH=src`` and masterkey's
``train`` extra), else a loop of its own that does the same per step (autocast forward, the finite-loss check that
syncs, backward, optimizer, schedule); what was used is printed and recorded. Data is synthetic and in memory
(uint8 images, larger than the training size, random-resized-cropped and flipped per sample):

- ``device``: the whole uint8 dataset on the GPU, each batch cropped, flipped and normalised there in one batched
  ``affine_grid`` + ``grid_sample`` (no DataLoader: what an in-memory dataset can do);
- ``loader wN [pin]``: a torch DataLoader whose ``N`` worker processes crop, flip and normalise each image on the CPU
  and collate float32 batches (as masterkey's ``ImageClassificationDataset`` does), persistent workers, prefetch 4,
  with ``pin`` pinned memory and non-blocking copies.

The model settings are measured on the ``device`` pipeline (data never waits), the pipelines with channels_last and
eager. Compiled runs go last, each in a child process with a time limit, while the budget lasts (``--budget``
seconds for everything). Prints a table; writes ``$OUT/gpu_train.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

START = time.perf_counter()
MODEL = "tf_efficientnet_lite0"
NUM_CLASSES = 100
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's ImageNet defaults for lite0


def _missing(names: list[str]) -> list[str]:
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # blocked (sys.modules[name] = None) or broken
            return True

    return [name for name in names if absent(name)]


MISSING = _missing(["torch", "timm", "accelerate"])
if "torch" in MISSING or "timm" in MISSING:
    print(f"missing: {', '.join(MISSING)}; this script needs torch and timm (accelerate is optional)")
    sys.exit(2)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import timm  # noqa: E402

HAVE_ACCELERATE = "accelerate" not in MISSING
if HAVE_ACCELERATE:
    from accelerate import Accelerator  # noqa: E402
    from accelerate.utils import DataLoaderConfiguration  # noqa: E402
try:  # masterkey's own loop and choices, when src/ is on the path and its train extra is installed
    if os.environ.get("GPU_TRAIN_NO_MASTERKEY"):  # to check this script's own loop
        raise ImportError("GPU_TRAIN_NO_MASTERKEY is set")
    from masterkey.inject import freeze_depthwise as _mk_freeze  # noqa: E402
    from masterkey.training.config import make_config  # noqa: E402
    from masterkey.training.loop import LoopState, training_loop  # noqa: E402
    from masterkey.training.run import _optimizer, _place_model  # noqa: E402

    MASTERKEY, MASTERKEY_ERROR = HAVE_ACCELERATE, None if HAVE_ACCELERATE else "accelerate missing"
except Exception as e:  # noqa: BLE001 - any missing dependency: the script's own equivalents are used
    MASTERKEY, MASTERKEY_ERROR = False, f"{type(e).__name__}: {e}"


# -- data ------------------------------------------------------------------------------------------------------------
def source_size(resolution: int) -> int:
    return {224: 256}.get(resolution, round(resolution * 1.15))


def make_images(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, NUM_CLASSES, (n,), generator=g))  # fmt: skip


def crop_boxes(b: int, generator: torch.Generator, device, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized-crop boxes as fractions of the side: (w, h, cx, cy, flip) per sample, ``(b, 5)``, drawn on
    ``device`` by ``generator`` (a generator of that device)."""
    u = torch.rand(b, 5, generator=generator, device=device)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    cx, cy = (2 * u[:, 2] - 1) * (1 - w), (2 * u[:, 3] - 1) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    return torch.stack([w, h, cx, cy, flip], 1)


def augment_on_device(images: torch.Tensor, boxes: torch.Tensor, resolution: int, mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Crop, resize (bilinear), flip and normalise a uint8 batch where it is, in one ``grid_sample``; ``mean`` and
    ``std`` on 0-255, shaped ``(1, 3, 1, 1)``, on the batch's device."""
    w, h, cx, cy, flip = boxes.unbind(1)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, [images.shape[0], 3, resolution, resolution], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return (out - mean) / std


class DeviceLoader:
    """Batches of the whole dataset held on the device, augmented there; ``length`` batches per epoch."""

    def __init__(self, images, labels, batch_size: int, resolution: int, length: int, device):
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.resolution, self.length, self.device = batch_size, resolution, length, device
        # drawn on the device: a copy from pageable host memory would wait for the GPU's queued work (the step
        # before), and that wait would be counted as waiting for data
        self.generator = torch.Generator(device=device).manual_seed(1)
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(1 + epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for _ in range(self.length):
            index = torch.randint(0, len(self.labels), (self.batch_size,), generator=self.generator, device=self.device)
            boxes = crop_boxes(self.batch_size, self.generator, self.device)
            pixels = augment_on_device(self.images[index], boxes, self.resolution, self.mean, self.std)
            yield {"pixel_values": pixels, "labels": self.labels[index]}


class CpuAugmented(torch.utils.data.Dataset):
    """One image at a time on the CPU, as a DataLoader worker does it: crop, resize, flip, normalise to float32;
    ``length`` samples (indices wrap around the images, so that no epoch ends during a measurement)."""

    def __init__(self, images, labels, resolution: int, length: int):
        self.images, self.labels, self.resolution, self.length = images, labels, resolution, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        image = self.images[i % len(self.labels)]
        box = crop_boxes(1, g, "cpu")[0].tolist()
        side = image.shape[-1]
        w, h = max(1, round(box[0] * side)), max(1, round(box[1] * side))
        x0 = round((box[2] + 1) / 2 * (side - w))
        y0 = round((box[3] + 1) / 2 * (side - h))
        crop = image[:, y0 : y0 + h, x0 : x0 + w].unsqueeze(0).float()
        out = F.interpolate(crop, size=(self.resolution,) * 2, mode="bilinear", align_corners=False)[0]
        if box[4] < 0:
            out = out.flip(-1)
        out = (out / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
        return {"pixel_values": out, "labels": self.labels[i % len(self.labels)]}


# -- the model and the loop ------------------------------------------------------------------------------------------
def make_model(device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=NUM_CLASSES)
    if MASTERKEY:
        _mk_freeze(model)
        return _place_model(model, device, channels_last=channels_last)
    for module in model.modules():  # depthwise: one input channel per group
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            module.weight.requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def make_optimizer(model, device) -> torch.optim.Optimizer:
    if MASTERKEY:
        return _optimizer(model, make_config(dataset_name="digits", learning_rate=1e-3), device)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=1e-3, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=1e-3, foreach=True)


def run_loop(accelerator, model, optimizer, scheduler, loader, spec, device) -> dict:
    """Warm-up steps, then timed steps: samples/s, data-wait share, the first step's time."""
    warmup, steps = spec["warmup"], spec["steps"]
    if MASTERKEY:
        state = LoopState(max_steps=warmup + steps, num_epochs=10**6)
        mark = {}

        def end_of_warmup(_name: str) -> None:  # outside the timed loop, every `warmup` steps; the first counts
            mark.setdefault("session", state.session_train_time)
            mark.setdefault("data", state.data_time)

        training_loop(accelerator, model, optimizer, scheduler, loader, state, progress=False,
                      checkpointing_steps=warmup, on_checkpoint=end_of_warmup,
                      channels_last=spec["channels_last"])  # fmt: skip
        session = state.session_train_time - mark["session"]
        wait = (state.data_time - mark["data"]) / session
        first = state.first_step_time
        return {"samples_per_s": steps * spec["batch"] / session, "data_wait": wait, "first_step_s": first}
    # the same per-step work as masterkey's training_loop
    def autocast():
        return accelerator.autocast() if accelerator is not None else torch.autocast(device.type, torch.bfloat16)

    model.train()
    done, data_time, first, start, iterator = 0, 0.0, None, None, iter(loader)
    t_first = time.perf_counter()
    while done < warmup + steps:
        if done == warmup:
            start, data_time = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        batch = next(iterator)
        pixels, labels = batch["pixel_values"].to(device, non_blocking=True), batch["labels"].to(device)
        if spec["channels_last"]:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        data_time += time.perf_counter() - t0
        with autocast():
            loss = F.cross_entropy(model(pixels), labels)
        if not torch.isfinite(loss.detach()).item():
            raise RuntimeError("the loss became non-finite")
        loss.backward() if accelerator is None else accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
        if first is None:
            first = time.perf_counter() - t_first
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"samples_per_s": steps * spec["batch"] / elapsed, "data_wait": data_time / elapsed, "first_step_s": first}


def measure(spec: dict, data: dict, device) -> dict:
    """One configuration: model, optimizer, data pipeline, loop; returns the spec with its numbers."""
    torch.backends.cudnn.benchmark = spec.get("cudnn_benchmark", False)
    res, batch = spec["res"], spec["batch"]
    images, labels = data[res]
    length = spec["warmup"] + spec["steps"] + 2
    model = make_model(device, spec["channels_last"])
    optimizer = make_optimizer(model, device)
    pipeline = spec["pipeline"]
    if pipeline == "device":
        loader = DeviceLoader(images, labels, batch, res, length, device)
    else:
        workers, pin = spec["workers"], spec["pin"]
        loader = torch.utils.data.DataLoader(
            CpuAugmented(images, labels, res, length * batch), batch_size=batch, shuffle=True, drop_last=True,
            num_workers=workers, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
            pin_memory=pin and device.type == "cuda",
        )  # fmt: skip
    accelerator = None
    if HAVE_ACCELERATE:
        loading = DataLoaderConfiguration(non_blocking=spec.get("pin", False) and device.type == "cuda")
        accelerator = Accelerator(mixed_precision="bf16", cpu=device.type == "cpu", dataloader_config=loading)
        if pipeline == "device":
            model, optimizer = accelerator.prepare(model, optimizer)
        else:
            model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    base = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    scheduler = torch.optim.lr_scheduler.LambdaLR(base, lambda step: 1.0)
    if accelerator is not None:
        scheduler = accelerator.prepare(scheduler)
    # static shapes, as masterkey's --torch_compile (run._compiled): one graph per input size
    train_model = torch.compile(model, dynamic=False) if spec["compile"] else model
    result = run_loop(accelerator, train_model, optimizer, scheduler, loader, spec, device)
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    if accelerator is not None:
        accelerator.free_memory()  # its references to the model, optimizer and loader (and the loader's workers)
    del model, optimizer, loader, train_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**spec, **result, "status": "ok"}


def label(spec: dict) -> str:
    if spec["pipeline"] == "device":
        return "device"
    return f"loader w{spec['workers']}{' pin' if spec['pin'] else ''}"


# -- the plan --------------------------------------------------------------------------------------------------------
def plan(args) -> tuple[list[dict], list[dict]]:
    """(eager specs in order, compiled specs in order)."""
    resolutions, batch = args.resolutions, args.batch
    common = {"batch": batch, "warmup": args.warmup, "steps": args.steps, "compile": False}
    eager = []
    for res in resolutions:  # model settings, data never waiting
        for cl in (False, True):
            eager.append({**common, "res": res, "channels_last": cl, "pipeline": "device"})
        eager.append({**common, "res": res, "channels_last": True, "pipeline": "device", "cudnn_benchmark": True})
    loader_steps = {"warmup": args.warmup, "steps": max(2, args.steps // 2)}
    for res in resolutions:  # data pipelines, channels_last eager
        for workers, pin in args.loaders:
            eager.append({**common, **loader_steps, "res": res, "channels_last": True, "pipeline": "loader",
                          "workers": workers, "pin": pin})  # fmt: skip
    compiled = [{**common, "res": res, "channels_last": cl, "pipeline": "device", "compile": True}
                for cl in (True, False) for res in reversed(resolutions)]  # fmt: skip
    return eager, compiled


def run_child(spec: dict, args, timeout: float) -> dict:
    """A compiled run in a child process, killed at ``timeout`` seconds (compiling cannot be interrupted)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec),
               *(["--smoke"] if args.smoke else [])]  # fmt: skip
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {**spec, "status": f"stopped after {timeout:.0f} s (budget)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**spec, "status": f"failed (exit {done.returncode}): {' | '.join(tail)[:300]}"}
    return {**json.loads(lines[-1][len("RESULT ") :]), "child_wall_s": time.perf_counter() - t0}


def print_row(r: dict) -> None:
    cl = "channels_last" if r["channels_last"] else "contiguous"
    extra = " +cudnn.benchmark" if r.get("cudnn_benchmark") else ""
    if r.get("status") != "ok":
        print(f"{r['res']:>4} {cl:<14} {'compile' if r['compile'] else 'eager':<8} {label(r):<15} "
              f"{r.get('status')}", flush=True)  # fmt: skip
        return
    print(f"{r['res']:>4} {cl:<14} {'compile' if r['compile'] else 'eager':<8} {label(r):<15} "
          f"{r['samples_per_s']:>10.1f} {100 * r['data_wait']:>8.1f}% {r['first_step_s']:>9.2f}s"
          f"{extra}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device there is (CPU)")
    parser.add_argument("--budget", type=float, help="seconds for everything, compiling included (default 330; "
                        "--smoke: 90, which stops its compiled runs on a CPU)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one spec as JSON
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.budget is None:
        args.budget = 90.0 if args.smoke else 330.0
    if args.smoke:
        args.resolutions, args.batch, args.warmup, args.steps, args.images = [32, 64], 8, 2, 4, 32
        args.loaders = [(0, False), (2, True)]
        torch.set_num_threads(1)
    else:
        args.resolutions, args.batch, args.warmup, args.steps, args.images = [64, 224], 256, 8, 30, 1024
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        args.loaders = [(0, False), (4, False), (4, True), (8, True), (max(8, cores - 2), True)]
    if args.one:  # a child: one compiled measurement, printed as JSON
        spec = json.loads(args.one)
        data = {spec["res"]: make_images(args.images, source_size(spec["res"]))}
        print("RESULT " + json.dumps(measure(spec, data, device)), flush=True)
        return
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: run with --smoke on CPU, or on a GPU machine")
        sys.exit(2)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                "accelerate": None if not HAVE_ACCELERATE else __import__("accelerate").__version__}  # fmt: skip
    loop = "masterkey.training.training_loop" if MASTERKEY else f"this script's loop ({MASTERKEY_ERROR})"
    print(f"{MODEL}, depthwise frozen, bf16 autocast, batch {args.batch}, {args.steps} timed steps after "
          f"{args.warmup} (loaders: half as many), on {gpu} ({device}); {os.cpu_count()} CPUs; {versions}")
    print(f"missing: {', '.join(MISSING) or 'nothing'}; loop: {loop}")
    data = {res: make_images(args.images, source_size(res)) for res in args.resolutions}
    print(f"\n{'res':>4} {'layout':<14} {'mode':<8} {'data':<15} {'samples/s':>10} {'data wait':>9} {'1st step':>10}")
    results = []
    eager, compiled = plan(args)
    deadline = START + args.budget
    for spec in eager:
        if time.perf_counter() > deadline - 30:
            results.append({**spec, "status": "skipped (budget)"})
        else:
            try:
                results.append(measure(spec, data, device))
            except Exception as e:  # noqa: BLE001 - one failing configuration must not lose the others
                results.append({**spec, "status": f"failed: {type(e).__name__}: {str(e)[:200]}"})
        print_row(results[-1])
    del data
    for spec in compiled:  # each in its own process, within what is left of the budget
        left = deadline - time.perf_counter()
        if left < (20 if args.smoke else 60):
            results.append({**spec, "status": f"skipped ({left:.0f} s of the budget left)"})
        else:
            results.append(run_child(spec, args, left - 5))
        print_row(results[-1])
    report = {"device": gpu, "device_type": device.type, "cpus": os.cpu_count(), "versions": versions,
              "loop": loop, "missing": MISSING, "model": MODEL, "mixed_precision": "bf16", "batch": args.batch,
              "smoke": args.smoke, "wall_s": time.perf_counter() - START, "results": results}  # fmt: skip
    print(f"\nwall {report['wall_s']:.0f} s")
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_train.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
