"""Time masterkey.fit_universal on a million 7x7 filters (target: a few seconds on 2 CPU cores).

    python benchmarks/fit_universal.py [--filters 1000000] [--repeats 3]

The filters are made as a * key_k + b + noise, so the fit has real structure to find; the script also checks that
the fitted keys are the ones used to make them.
"""

import argparse
import time

import torch

import masterkey
from masterkey.universal import learned_keys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--filters", type=int, default=1_000_000)
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()

generator = torch.Generator().manual_seed(0)
keys = learned_keys()
k = torch.randint(0, 8, (args.filters,), generator=generator)
a = torch.randn(args.filters, 1, 1, generator=generator)
b = 0.1 * torch.randn(args.filters, 1, 1, generator=generator)
filters = a * keys[k] + b + 0.02 * torch.randn(args.filters, 7, 7, generator=generator)

times = []
for _ in range(args.repeats):
    start = time.perf_counter()
    fit = masterkey.fit_universal(filters)
    times.append(time.perf_counter() - start)
best = min(times)
print(f"torch threads: {torch.get_num_threads()}")
print(
    f"fit_universal: {args.filters:,} filters of 7x7 in {best:.2f} s (best of {args.repeats}), "
    f"{args.filters / best / 1e6:.2f} M filters/s; all runs: {', '.join(f'{t:.2f}' for t in times)} s"
)
print(f"keys recovered: {(fit.key == k).float().mean().item():.2%}, mean R^2 {fit.r2.mean().item():.3f}")
