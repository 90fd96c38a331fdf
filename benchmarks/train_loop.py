"""Speed of the transfer training loop: ours against a minimal plain PyTorch loop, frozen depthwise against all
trainable, and the share of time spent waiting for data.

    python benchmarks/train_loop.py [--resolutions 32 64] [--steps 30] [--repeats 3] [--threads 2]

1. Same model (tf_efficientnet_lite0, 10 classes), same in-memory tensors, same optimizer (AdamW), fixed number of
   steps: ``masterkey.training.training_loop`` (Accelerate: prepared model/optimizer/loader, ``accumulate``,
   scheduler, loss bookkeeping, data-wait timing) against a bare
   ``for x, y in loader: loss.backward(); opt.step()`` loop.
   Target: ours within 5% of the plain loop.
2. Within ours: the ImageNet lite0 bank injected with depthwise frozen, against every parameter trainable.
   Target: frozen at least as fast.
3. Our loop on the real pipeline (animal-mnist decoded from Arrow, RGB conversion, timm's training transforms, the
   DataLoader settings ``transfer.py`` uses): the share of the loop spent waiting for the next batch.
   Target: under 10% at 32-64 px on 2 cores.

Configurations run interleaved, ``--repeats`` times each, and the median is reported, so that a CPU shared with other
jobs disturbs all of them alike. Samples/s count training samples (forward + backward + optimizer step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as examples/transfer.py sets it, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import masterkey  # noqa: E402
from masterkey.training.loop import LoopState, training_loop  # noqa: E402

MODEL = "tf_efficientnet_lite0"


class TensorBatches(torch.utils.data.Dataset):
    """Preprocessed images in memory, returned as the dict batches transfer.py's loaders give."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def make_model(frozen: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = masterkey._timm.create_model(MODEL, num_classes=10)
    if frozen:
        model = masterkey.from_pretrained_filters(model, masterkey.load_master_filters("imagenet-lite0"))
    return model


def optimizer_for(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def plain_loop(dataset, batch_size: int, warmup: int, steps: int) -> float:
    """The minimal loop; returns samples/s over ``steps`` steps after ``warmup``."""
    model = make_model(frozen=True).train()
    optimizer = optimizer_for(model)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    done, start = 0, None
    while done < warmup + steps:
        for batch in loader:
            if done == warmup:
                start = time.perf_counter()
            loss = F.cross_entropy(model(batch["pixel_values"]), batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == warmup + steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def our_loop(dataset, batch_size: int, warmup: int, steps: int, *, frozen: bool = True, workers: int = 0):
    """``masterkey.training.training_loop`` as transfer.py runs it; returns (samples/s, data-wait share) over
    ``steps``."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from transformers import get_scheduler

    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0))
    model = make_model(frozen)
    optimizer = optimizer_for(model)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)  # fmt: skip
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = accelerator.prepare(get_scheduler("constant", optimizer=optimizer.optimizer))
    state = LoopState(max_steps=warmup, num_epochs=10**6)
    training_loop(accelerator, model, optimizer, scheduler, loader, state, progress=False)
    state.max_steps = warmup + steps
    state.session_train_time = state.data_time = 0.0
    start = time.perf_counter()
    training_loop(accelerator, model, optimizer, scheduler, loader, state, progress=False)
    elapsed = time.perf_counter() - start
    return steps * batch_size / elapsed, state.data_time / state.session_train_time


def real_pipeline(resolution: int):
    """animal-mnist through the data path transfer.py uses (Arrow decode, RGB, timm training transforms)."""
    from masterkey.training.data import (
        ImageClassificationDataset,
        load_builtin_dataset,
        prepare_splits,
        timm_transforms,
    )

    splits = prepare_splits(load_builtin_dataset("animal-mnist"))
    train_tf, _, _ = timm_transforms(make_model(False), resolution)
    return ImageClassificationDataset(splits.train, image_column=splits.image_column,
                                      label_column=splits.label_column, transform=train_tf)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="DataLoader workers for part 3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"{MODEL}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, median of "
          f"{args.repeats}; torch {torch.__version__}, {args.threads} threads; load average {load} at start "
          "(above 0 when other jobs share the CPU)")  # fmt: skip
    print(f"{'res':>4} {'measurement':<38} {'samples/s':>10} {'ratio':>8} {'data wait':>10}  target")
    for resolution in args.resolutions:
        n = args.batch_size * (args.steps + args.warmup)
        memory = TensorBatches(torch.randn(n, 3, resolution, resolution), torch.randint(0, 10, (n,)))
        real = real_pipeline(resolution)
        runs = {"plain": [], "ours": [], "ours_all": [], **{f"real{w}": [] for w in args.workers}}
        for _ in range(args.repeats):
            runs["plain"].append((plain_loop(memory, args.batch_size, args.warmup, args.steps), None))
            runs["ours"].append(our_loop(memory, args.batch_size, args.warmup, args.steps, frozen=True))
            runs["ours_all"].append(our_loop(memory, args.batch_size, args.warmup, args.steps, frozen=False))
            for w in args.workers:
                runs[f"real{w}"].append(our_loop(real, args.batch_size, args.warmup, args.steps, workers=w))
        speed = {k: statistics.median(s for s, _ in v) for k, v in runs.items()}
        wait = {k: statistics.median(w for _, w in v) for k, v in runs.items() if v[0][1] is not None}
        ratio = speed["ours"] / speed["plain"]
        frozen_ratio = speed["ours"] / speed["ours_all"]
        rows = [
            ("plain PyTorch loop (frozen dw)", speed["plain"], "", "", ""),
            ("our loop (frozen dw)", speed["ours"], f"{ratio:.3f}", f"{100 * wait['ours']:.1f}%",
             f"ratio >= 0.95: {'ok' if ratio >= 0.95 else 'MISSED'}"),
            ("our loop (all trainable)", speed["ours_all"], f"{frozen_ratio:.3f}", f"{100 * wait['ours_all']:.1f}%",
             f"frozen/all >= 1: {'ok' if frozen_ratio >= 1.0 else 'MISSED'}"),
        ]  # fmt: skip
        for w in args.workers:
            share = wait[f"real{w}"]
            rows.append((f"our loop, animal-mnist pipeline, {w} workers", speed[f"real{w}"], "",
                         f"{100 * share:.1f}%", f"wait < 10%: {'ok' if share < 0.10 else 'MISSED'}"))  # fmt: skip
        for name, sps, r, w, target in rows:
            print(f"{resolution:>4} {name:<38} {sps:>10.1f} {r:>8} {w:>10}  {target}")


if __name__ == "__main__":
    main()
