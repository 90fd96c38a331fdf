"""Speed of transfer training as users run it, against a plain eager PyTorch loop, side by side.

    python benchmarks/train_loop.py [--models ...] [--resolutions 32 64] [--trainable frozen all] [--steps 15]
                                    [--warmup 3] [--repeats 3] [--threads 1] [--compile] [--bf16] [--untransposed]
                                    [--default_allocator]

For each model, resolution and trainable set (``frozen``: the depthwise kernels frozen, everything else trains;
``all``: every parameter trains), two loops run the same number of steps on batches of 64:

- **plain**: a minimal eager PyTorch loop on preprocessed images held in memory: the model as timm creates it,
  ``torch.optim.AdamW`` with torch's default implementation, ``for batch in loader: loss.backward(); opt.step()``;
- **ours**: what ``train_transfer`` runs with its default settings: animal-mnist decoded from Arrow, converted to RGB
  and augmented with timm's training transforms (seeded per example) in ``dataloader_num_workers`` DataLoader worker
  processes, the Accelerate-prepared model in channels_last, the fused AdamW over the trainable parameters in two
  weight-decay groups, the learning-rate schedule, and ``masterkey.training.training_loop`` with its loss checks,
  bookkeeping and data-wait timing (the same internal pieces ``train_transfer`` wires: ``_make_accelerator``,
  ``_data_loaders``, ``_place_model``, ``_optimizer``);
- with ``--compile``, also **ours + torch.compile** (``--torch_compile``); its first step, the compiling, is reported
  apart (minutes per model and resolution on a CPU the first time; inductor caches it on disk afterwards);
- with ``--untransposed``, also **ours without the transposed backward** (``--no_transposed_depthwise_backward``:
  torch's own backward for frozen depthwise kernels of 7x7 and up; only ConvNeXt-like models have them);
- with ``--default_allocator``, also **ours with malloc's defaults** (``--no_reuse_freed_memory``: the memory a step
  frees goes back to the OS, and the next step faults it in again); its columns end with ours' peak resident
  memory over this arm's (each measurement's process, data included);
- with ``--bf16``, also **ours + bf16**: Accelerate's bf16 mixed precision (``accelerate launch --mixed_precision
  bf16``, autocast to bfloat16 on a CPU that has it); it changes the numbers a run gives, so it is not a default.

Only steady-state steps are timed: the first ``--warmup`` steps (worker start, first allocations, compiling) are
not. Configurations run interleaved, ``--repeats`` times each, and the median is reported, so that a CPU shared
with other jobs disturbs all of them alike. Every measurement runs in a fresh process (spawned, one at a time), as a
user's training script or an experiment's run starts: malloc's state is per process, so ours keeping its freed
memory cannot reach the plain loop or the default-allocator arm, and no arm inherits what an earlier one did to
glibc's adaptive threshold (a process that has freed large blocks serves later ones from its heap: measured, a warm
process's plain loop faulted 0 pages per step where a fresh one faulted thousands). Samples/s count training
samples (forward, backward, optimizer step); page faults per step are the process's minor page faults over the
timed steps.
Goal (issue 14): ours at least 1.5x the plain loop with the defaults, one torch thread.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as examples/transfer.py sets it, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402
from transformers import get_scheduler  # noqa: E402

import masterkey  # noqa: E402
from masterkey.inject import freeze_depthwise  # noqa: E402
from masterkey.training.config import make_config  # noqa: E402
from masterkey.training.data import (  # noqa: E402
    ImageClassificationDataset,
    load_builtin_dataset,
    prepare_splits,
    timm_transforms,
)
from masterkey.training.loop import LoopState, training_loop  # noqa: E402
from masterkey.training.run import (  # noqa: E402
    _compiled,
    _data_loaders,
    _loader_workers,
    _make_accelerator,
    _optimizer,
    _place_model,
    _reuse_freed_memory,
    _transposed_depthwise,
)

MODELS = ("tf_efficientnet_lite0", "mobilenetv3_large_100", "convnext_atto")
NUM_CLASSES = 10  # animal-mnist


class TensorBatches(torch.utils.data.Dataset):
    """Preprocessed images in memory, returned as the dict batches transfer.py's loaders give."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def make_model(name: str, frozen: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = masterkey._timm.create_model(name, num_classes=NUM_CLASSES)
    if frozen:
        freeze_depthwise(model)  # what a frozen bank costs or saves: the values do not matter for speed
    return model


def _page_faults() -> int:
    """This process's minor page faults so far (memory the OS mapped in on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def plain_loop(name: str, frozen: bool, memory: TensorBatches, batch_size: int, warmup: int, steps: int) -> dict:
    """The minimal eager loop on in-memory tensors; samples/s and page faults per step over ``steps`` steps after
    ``warmup``."""
    model = make_model(name, frozen).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loader = torch.utils.data.DataLoader(memory, batch_size=batch_size, shuffle=True, drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for batch in loader:
            if done == warmup:
                start, faults = time.perf_counter(), _page_faults()
            loss = F.cross_entropy(model(batch["pixel_values"]), batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == warmup + steps:
                break
    return {"samples_per_s": steps * batch_size / (time.perf_counter() - start),
            "faults_per_step": (_page_faults() - faults) / steps}  # fmt: skip


def our_loop(name: str, frozen: bool, resolution: int, splits, args, *, compile: bool = False,
             bf16: bool = False, transposed: bool = True, reuse: bool = True) -> dict:  # fmt: skip
    """``train_transfer``'s pipeline with its defaults (``--torch_compile`` with ``compile``, Accelerate's bf16 mixed
    precision with ``bf16``, ``--no_transposed_depthwise_backward`` without ``transposed``, ``--no_reuse_freed_memory``
    without ``reuse``): samples/s and the data-wait share over ``steps`` steps after ``warmup``, and the first step's
    time."""
    config = make_config(model=name, dataset_name="animal-mnist", resolution=resolution, torch_compile=compile,
                         per_device_train_batch_size=args.batch_size, cpu_threads=args.threads,
                         transposed_depthwise_backward=transposed, reuse_freed_memory=reuse)  # fmt: skip
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"  # as `accelerate launch` sets it
    AcceleratorState._reset_state(reset_partial_state=True)  # the state is shared: a new run reads the setting anew
    accelerator = _make_accelerator(config, Path(tempfile.gettempdir()))
    if accelerator.mixed_precision != ("bf16" if bf16 else "no"):
        raise SystemExit(f"Accelerate chose mixed precision {accelerator.mixed_precision!r}; unset its config's.")
    model = make_model(name, frozen)
    train_tf, _, _ = timm_transforms(model, resolution, crop_scale=config.crop_scale)
    train_ds = ImageClassificationDataset(splits.train, transform=train_tf, row_ids=splits.train_rows, split="train",
                                          seed=config.seed, image_column=splits.image_column,
                                          label_column=splits.label_column, label_to_id=splits.label_to_id)  # fmt: skip
    train_loader, _ = _data_loaders(config, accelerator, train_ds, train_ds)
    model = _place_model(model, accelerator.device, channels_last=config.channels_last)
    optimizer = _optimizer(model, config, accelerator.device)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    scheduler = accelerator.prepare(get_scheduler(config.lr_scheduler_type, optimizer=optimizer.optimizer,
                                                  num_warmup_steps=config.num_warmup_steps,
                                                  num_training_steps=10 * (args.warmup + args.steps)))  # fmt: skip
    train_model = _compiled(model) if config.torch_compile else model
    state = LoopState(max_steps=args.warmup + args.steps, num_epochs=10**6)
    mark = {}

    def end_of_warmup(_name: str) -> None:  # called (outside the timed loop) every `warmup` steps: the first counts
        mark.setdefault("time", time.perf_counter())
        mark.setdefault("session", state.session_train_time)
        mark.setdefault("data", state.data_time)
        mark.setdefault("faults", _page_faults())

    training_loop(accelerator, train_model, optimizer, scheduler, train_loader, state, progress=False,
                  checkpointing_steps=args.warmup, on_checkpoint=end_of_warmup,
                  channels_last=config.channels_last,
                  transposed_depthwise=_transposed_depthwise(config, model, accelerator.device),
                  reuse_memory=_reuse_freed_memory(config, accelerator.device))  # fmt: skip
    session = state.session_train_time - mark["session"]
    return {"samples_per_s": args.steps * args.batch_size / session,
            "faults_per_step": (_page_faults() - mark["faults"]) / args.steps,
            "data_wait": (state.data_time - mark["data"]) / session, "first_step_s": state.first_step_time}  # fmt: skip


#: What each arm runs: ours with which settings changed from the defaults (None: the plain loop).
ARMS = {"plain": None, "ours": {}, "compiled": {"compile": True}, "bf16": {"bf16": True},
        "untransposed": {"transposed": False}, "default_allocator": {"reuse": False}}  # fmt: skip


def _random_images(resolution: int, n: int) -> TensorBatches:
    generator = torch.Generator().manual_seed(resolution)
    return TensorBatches(torch.randn(n, 3, resolution, resolution, generator=generator),
                         torch.randint(0, NUM_CLASSES, (n,), generator=generator))  # fmt: skip


def measure(arm: str, name: str, frozen: bool, resolution: int, args) -> dict:
    """One measurement of ``arm``, in a fresh process; with the process's peak resident memory (its data included)."""
    torch.set_num_threads(args.threads)
    if ARMS[arm] is None:
        images = _random_images(resolution, args.batch_size * (args.steps + args.warmup))
        result = plain_loop(name, frozen, images, args.batch_size, args.warmup, args.steps)
    else:
        splits = prepare_splits(load_builtin_dataset("animal-mnist"))
        result = our_loop(name, frozen, resolution, splits, args, **ARMS[arm])
    return result | {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory(name: str, frozen: bool) -> dict:
    """Bytes of gradients (after a backward, before the optimizer clears them) and of optimizer state (after a step)
    with ``train_transfer``'s optimizer; the parameters' own bytes for scale."""
    model = _place_model(make_model(name, frozen), torch.device("cpu"), channels_last=True)
    optimizer = _optimizer(model, make_config(dataset_name="animal-mnist"), torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    optimizer.step()
    state = sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    in_optimizer = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    return {"params": sum(p.nbytes for p in model.parameters()), "grads": grads, "state": state,
            "frozen_numel": sum(p.numel() for p in model.parameters() if not p.requires_grad),
            "in_optimizer": in_optimizer}  # fmt: skip


def print_memory(models) -> None:
    print(f"{'model':<22} {'trainable':<9} {'params MB':>9} {'grads MB':>9} {'AdamW state MB':>14} "
          f"{'frozen params':>13} {'params in optimizer':>19}")  # fmt: skip
    for name in models:
        for frozen in (True, False):
            m = memory(name, frozen)
            print(f"{name:<22} {'frozen' if frozen else 'all':<9} {m['params'] / 1e6:>9.3f} {m['grads'] / 1e6:>9.3f} "
                  f"{m['state'] / 1e6:>14.3f} {m['frozen_numel']:>13,} {m['in_optimizer']:>19,}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--trainable", nargs="+", default=["frozen", "all"], choices=["frozen", "all"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the issue's numbers: 1)")
    parser.add_argument("--compile", action="store_true", help="also ours with --torch_compile")
    parser.add_argument("--bf16", action="store_true", help="also ours with Accelerate's bf16 mixed precision")
    parser.add_argument("--untransposed", action="store_true",
                        help="also ours with --no_transposed_depthwise_backward (torch's own backward for frozen "
                             "depthwise kernels of 7x7 and up)")  # fmt: skip
    parser.add_argument("--default_allocator", action="store_true",
                        help="also ours with --no_reuse_freed_memory (malloc's defaults: freed memory goes back to the "
                             "OS and is faulted in again)")  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="only the gradient and optimizer-state memory")
    args = parser.parse_args()
    if args.memory:
        print_memory(args.models)
        return
    torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    defaults = make_config(dataset_name="animal-mnist")
    workers = _loader_workers(defaults, _make_accelerator(defaults, Path(tempfile.gettempdir())))
    print(f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, median of {args.repeats} "
          f"interleaved repeats; torch {torch.__version__}, {args.threads} torch thread(s), "
          f"{workers} DataLoader worker(s) for ours, {os.cpu_count()} CPUs; load average "
          f"{load} at start (above 0 when other jobs share the CPU)")  # fmt: skip
    configs = [(m, r, t) for m in args.models for r in args.resolutions for t in args.trainable]
    arms = ["plain", "ours", *(["compiled"] if args.compile else []), *(["bf16"] if args.bf16 else []),
            *(["untransposed"] if args.untransposed else []),
            *(["default_allocator"] if args.default_allocator else [])]  # fmt: skip
    runs = {(c, arm): [] for c in configs for arm in arms}
    # a fresh process for every measurement
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as processes:
        for repeat in range(args.repeats):
            for c in configs:
                name, resolution, trainable = c
                for arm in arms:
                    runs[c, arm].append(processes.submit(measure, arm, name, trainable == "frozen", resolution,
                                                         args).result())  # fmt: skip
                latest = {arm: runs[c, arm][-1] for arm in arms}
                print(f"  repeat {repeat + 1}/{args.repeats}: {name} {resolution} px {trainable}: "
                      + ", ".join(f"{arm} {m['samples_per_s']:.1f} ({m['faults_per_step']:.0f} page faults/step, "
                                  f"peak {m['peak_mb']:.0f} MB)" for arm, m in latest.items()), flush=True)  # fmt: skip

    def median(c, arm, key="samples_per_s"):
        return statistics.median(run[key] for run in runs[c, arm])

    header = f"{'model':<22} {'res':>4} {'trainable':<9} {'plain/s':>8} {'ours/s':>8} {'ours/plain':>10} {'wait':>6}"
    if args.compile:
        header += f" {'compiled/s':>10} {'comp/plain':>10} {'1st step':>9}"
    if args.bf16:
        header += f" {'bf16/s':>8} {'bf16/plain':>10}"
    if args.untransposed:
        header += f" {'untr./s':>8} {'untr./plain':>11} {'ours/untr.':>10}"
    if args.default_allocator:
        header += f" {'malloc/s':>8} {'malloc/plain':>12} {'ours/malloc':>11} {'peak mem':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for c in configs:
        plain, ours = median(c, "plain"), median(c, "ours")
        line = (f"{c[0]:<22} {c[1]:>4} {c[2]:<9} {plain:>8.1f} {ours:>8.1f} {ours / plain:>10.2f} "
                f"{100 * median(c, 'ours', 'data_wait'):>5.1f}%")  # fmt: skip
        if args.compile:
            compiled = median(c, "compiled")
            first = runs[c, "compiled"][0]["first_step_s"]
            line += f" {compiled:>10.1f} {compiled / plain:>10.2f} {first:>8.1f}s"
        if args.bf16:
            line += f" {median(c, 'bf16'):>8.1f} {median(c, 'bf16') / plain:>10.2f}"
        if args.untransposed:
            untransposed = median(c, "untransposed")
            line += f" {untransposed:>8.1f} {untransposed / plain:>11.2f} {ours / untransposed:>10.2f}"
        if args.default_allocator:
            default = median(c, "default_allocator")
            line += (f" {default:>8.1f} {default / plain:>12.2f} {ours / default:>11.2f} "
                     f"{median(c, 'ours', 'peak_mb') / median(c, 'default_allocator', 'peak_mb'):>9.3f}")  # fmt: skip
        print(line)
    if set(args.trainable) == {"frozen", "all"}:
        print("\nfrozen depthwise / all trainable (ours): " + ", ".join(
            f"{m} {r} px {median((m, r, 'frozen'), 'ours') / median((m, r, 'all'), 'ours'):.2f}"
            for m in args.models for r in args.resolutions))  # fmt: skip
    ratios = [median(c, "ours") / median(c, "plain") for c in configs]
    print(f"ours/plain: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, max {max(ratios):.2f}; "
          f"goal >= 1.5: {sum(r >= 1.5 for r in ratios)} of {len(ratios)} configurations")  # fmt: skip


if __name__ == "__main__":
    main()
