"""Two results of the same experiment side by side, cell by cell and seed by seed.

    python benchmarks/compare_results.py BEFORE/results.json AFTER/results.json [--groups TEXT ...]

For every cell (group and filters label) in both: the test accuracy of each seed and the mean, before and after,
and the change of the mean. Use it where one setting changed between two runs of a grid (e.g. the source networks'
seed, ``source_seed``) to see which cells moved and whether one seed did.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def cells(path: Path) -> dict[tuple[str, str], dict[int, float]]:
    """(group, label) -> {seed: accuracy} of one results.json."""
    found: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for run in json.loads(path.read_text())["runs"]:
        found[run["group"], run["label"]][run["seed"]] = run["accuracy"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--groups", nargs="+", help="only cells whose group contains one of these texts")
    args = parser.parse_args()
    before, after = cells(args.before), cells(args.after)
    print(f"before: {args.before}\nafter:  {args.after}\n")
    print("| cell | seeds | before, by seed | after, by seed | mean before | mean after | change |")
    print("|---|---|---|---|---|---|---|")
    for key in before:
        if key not in after or (args.groups and not any(text in key[0] for text in args.groups)):
            continue
        seeds = sorted(set(before[key]) & set(after[key]))
        if not seeds:
            continue
        old = [before[key][s] for s in seeds]
        new = [after[key][s] for s in seeds]
        mean_old, mean_new = statistics.mean(old), statistics.mean(new)
        print(f"| {key[0]}, {key[1]} | {', '.join(map(str, seeds))} | {' '.join(f'{a:.3f}' for a in old)} | "
              f"{' '.join(f'{a:.3f}' for a in new)} | {mean_old:.3f} | {mean_new:.3f} | {mean_new - mean_old:+.3f} |")


if __name__ == "__main__":
    main()
