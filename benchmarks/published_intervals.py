"""Every published interval of the exploratory grids, corrected together: how many survive Holm and Benjamini-Hochberg.

    python benchmarks/published_intervals.py [--experiments docs/experiments] [--alpha 0.05] [--all]

Reads each experiment's ``results.json`` under ``--experiments`` that reports test-split results and no analysis plan
(the exploratory grids; the tuning runs, scored on a validation split, and planned experiments, which correct their
own primary family, are left out), recomputes from its runs every paired interval it publishes (each arm against
from scratch of the same seed, and each contrast its experiment names) with the research wing's own statistics, and
corrects the paired t tests' p-values across all of them: Holm (family-wise error) and Benjamini-Hochberg (false
discovery rate), at ``--alpha``. Prints the counts and the intervals whose raw 95% interval excludes 0 (``--all``:
every interval), smallest p first, with both adjusted p-values.

This is the correction the verdicts owe before their confirmatory reruns report: a verdict resting on an interval
that does not survive it is exploratory, and says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from masterkey.research.cards import experiment_results_paths
from masterkey.research.experiments import TUNING_EXPERIMENTS
from masterkey.research.experiments.plots import results_chance
from masterkey.research.experiments.statistics import paired_contrasts, summarize
from masterkey.research.experiments.tables import format_difference
from masterkey.research.plans import bh_adjust, holm_adjust


def published_intervals(folder: Path) -> list[dict]:
    """One row per published paired interval of the exploratory experiments under ``folder``."""
    rows = []
    for path in experiment_results_paths(folder):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["experiment"] in TUNING_EXPERIMENTS or (data.get("plan") or {}).get("plan"):
            continue
        for row in summarize(data["runs"], chance=results_chance(data)):
            if row.get("vs_scratch") and row["vs_scratch"]["pairs"] > 1:
                rows.append({"experiment": data["experiment"], "a": f"{row['group']}, {row['label']}",
                             "b": "from scratch", **row["vs_scratch"]})  # fmt: skip
        for contrast in paired_contrasts(data["runs"], (data.get("details") or {}).get("contrasts", ())):
            if contrast["pairs"] > 1:
                rows.append({"experiment": data["experiment"], **contrast})
    for row, holm, bh in zip(rows, holm_adjust([r["p"] for r in rows]), bh_adjust([r["p"] for r in rows])):
        row.update(p_holm=holm, q_bh=bh)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=Path, default=Path("docs/experiments"))
    parser.add_argument("--alpha", type=float, default=0.05, help="the level of both corrections")
    parser.add_argument("--all", action="store_true", help="every interval, not only those whose raw one excludes 0")
    args = parser.parse_args()
    rows = sorted(published_intervals(args.experiments), key=lambda r: r["p"])
    raw = sum(r["real"] for r in rows)
    holm = sum(r["p_holm"] < args.alpha for r in rows)
    bh = sum(r["q_bh"] < args.alpha for r in rows)
    print(f"{len(rows)} paired intervals in {args.experiments} (exploratory, test split); raw 95% interval excludes 0: "
          f"{raw} (about {0.05 * len(rows):.0f} by chance alone); Holm at {args.alpha}: {holm}; "
          f"Benjamini-Hochberg at {args.alpha}: {bh}\n")  # fmt: skip
    print("| experiment | cell A | minus cell B | Δ, 95% CI | seeds | p | Holm p | BH q |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if args.all or r["real"]:
            print(f"| {r['experiment']} | {r['a']} | {r['b']} | {format_difference(r)} | {r['pairs']} | "
                  f"{r['p']:.4f} | {r['p_holm']:.3f} | {r['q_bh']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
