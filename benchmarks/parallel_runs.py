"""Many short runs on a small CPU: two one-thread runs side by side against one two-thread run at a time.

    python benchmarks/parallel_runs.py [--runs 4] [--steps 60] [--resolution 64] [--repeats 2] [--cores 2]
                                       [--default_allocator]

An experiment's grid is many independent ``train_transfer`` runs. On a machine with ``--cores`` cores they can train
one at a time with ``--cores`` torch threads each (``masterkey experiment NAME --cpu-threads 2``), or ``--cores`` at
a time with one thread each (``--jobs 2 --cpu-threads 1``, what ``make experiments`` does). This trains the same
``--runs`` runs (``tf_efficientnet_lite0``, the ImageNet lite0 bank frozen, Animal-MNIST, ``--steps`` steps of batch
64, evaluation on 256 images; seeds 0, 1, ...) both ways, each run in a fresh spawned process as the experiments
start them, the two ways interleaved ``--repeats`` times, and prints the wall time of each and their ratio (median
over repeats). Worker start-up and evaluation are part of the wall time, as they are in an experiment. With
``--default_allocator`` a third way runs the side-by-side runs with ``--no_reuse_freed_memory`` (malloc's defaults:
each step faults its freed activations in again), which measures what keeping freed memory gives the experiments.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as examples/transfer.py sets it, before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from masterkey.training import train_transfer  # noqa: E402


def _one_run(settings: dict) -> float:
    results = train_transfer(**settings)
    return results["train_time_s"]


def _train_all(runs: list[dict], *, workers: int) -> float:
    """Wall-clock seconds to train ``runs`` with ``workers`` spawned processes (one run per process)."""
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        list(pool.map(_one_run, runs))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="runs per way (an even number keeps both ways busy)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="times each way runs, interleaved")
    parser.add_argument("--cores", type=int, default=2, help="the CPU cores both ways share")
    parser.add_argument("--default_allocator", action="store_true",
                        help="also the side-by-side way with --no_reuse_freed_memory")  # fmt: skip
    args = parser.parse_args()

    def settings(folder: str, seed: int, threads: int, reuse: bool) -> dict:
        return dict(model="tf_efficientnet_lite0", filters="imagenet-lite0", dataset_name="animal-mnist",
                    resolution=args.resolution, max_train_steps=args.steps, max_eval_samples=256,
                    per_device_train_batch_size=64, seed=seed, cpu_threads=threads, reuse_freed_memory=reuse,
                    output_dir=os.path.join(folder, f"t{threads}-s{seed}"), overwrite_output_dir=True)  # fmt: skip

    side_by_side_way = f"{args.cores} runs at a time, 1 thread each"
    threaded_way = f"1 run at a time, {args.cores} threads"
    default_allocator_way = f"{side_by_side_way}, malloc's defaults (--no_reuse_freed_memory)"
    ways = {side_by_side_way: (args.cores, 1, True), threaded_way: (1, args.cores, True),
            **({default_allocator_way: (args.cores, 1, False)} if args.default_allocator else {})}  # fmt: skip
    times: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for way, (workers, threads, reuse) in ways.items():
                runs = [settings(folder, seed, threads, reuse) for seed in range(args.runs)]
                times[way].append(_train_all(runs, workers=workers))
                print(f"repeat {repeat}: {way}: {times[way][-1]:.1f} s", flush=True)
    print(f"\n{args.runs} runs of {args.steps} steps (tf_efficientnet_lite0, {args.resolution} px, batch 64, frozen "
          f"ImageNet lite0 bank), median of {args.repeats}:")  # fmt: skip
    print("| way | wall time (s) | runs per minute |")
    print("|---|---|---|")
    medians = {way: statistics.median(t) for way, t in times.items()}
    for way, seconds in medians.items():
        print(f"| {way} | {seconds:.1f} | {60 * args.runs / seconds:.2f} |")
    side_by_side, threaded = medians[side_by_side_way], medians[threaded_way]
    print(f"\nside by side / one at a time, runs per minute: {threaded / side_by_side:.2f}x")
    if args.default_allocator:
        print(f"side by side, freed memory kept / malloc's defaults, runs per minute: "
              f"{medians[default_allocator_way] / side_by_side:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
