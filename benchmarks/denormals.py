"""Training steps with denormal floats flushed to zero against IEEE denormals, side by side in one process.

A run's checkpoint folder (``<run>/checkpoints/epoch_N``: ``model.safetensors`` and the optimizer's state) is loaded
and the same steps are timed under each mode in turn, from the same weights and optimizer state each time, on one
torch thread, with a fixed batch of random images (denormals arise from the weights a run has learned, so a
checkpoint of a slow run shows them; fresh weights rarely do). Prints seconds per step and the ratio.

    python benchmarks/denormals.py outputs/cross-family/lr-sweep/runs/convnext_atto-from-scratch__lr-0.016__seed5100/checkpoints/epoch_16 \\
        --model convnext_atto --num-classes 10
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file


def _steps(model, optimizer, images, labels, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoint folder (model.safetensors, optimizer.bin)")
    parser.add_argument("--model", default="convnext_atto")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per mode and repeat")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=args.num_classes)
    model.load_state_dict(load_file(str(args.checkpoint / "model.safetensors")))
    # the optimizer's moments as the run had them, in one group (the groups only set weight decay)
    saved = torch.load(args.checkpoint / "optimizer.bin", weights_only=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=saved["param_groups"][0]["lr"])
    by_shape = {}
    for state in saved["state"].values():
        by_shape.setdefault(tuple(state["exp_avg"].shape), []).append(state)
    for p in model.parameters():
        if by_shape.get(tuple(p.shape)):
            optimizer.state[p] = by_shape[tuple(p.shape)].pop(0)
    start = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    images = torch.randn(args.batch_size, 3, args.resolution, args.resolution)
    labels = torch.randint(0, args.num_classes, (args.batch_size,))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for flush in (False, True):
            model.load_state_dict(start[0])
            optimizer.load_state_dict(start[1])
            torch.set_flush_denormal(flush)
            _steps(model, optimizer, images, labels, 1)  # warm-up
            times[flush].append(_steps(model, optimizer, images, labels, args.steps))
    torch.set_flush_denormal(False)
    ieee, flushed = min(times[False]), min(times[True])
    print(f"{args.model} {args.resolution}px batch {args.batch_size}, 1 thread, from {args.checkpoint}")
    print(f"IEEE denormals: {ieee:.3f} s/step; flushed to zero: {flushed:.3f} s/step; {ieee / flushed:.2f}x faster "
          f"(best of {args.repeats} x {args.steps} steps each)")


if __name__ == "__main__":
    main()
