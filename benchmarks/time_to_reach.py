"""How much faster each arm trains: the epochs (and seconds) it needs to reach from scratch's final accuracy.

    python benchmarks/time_to_reach.py docs/experiments/transfer-matrix/results.json [MORE_RESULTS_JSON ...]

For every results.json given, the table of ``masterkey.research.experiments.time_to_reach`` recomputed from its runs'
per-epoch test accuracies (results written before experiments recorded it carry an empty one): per arm, how many
runs reached the accuracy from scratch ends at with the same seed, the mean epochs, steps (where the runs recorded
them) and seconds of training they took, and that as a share of what from scratch itself took, with its 95%
interval over seeds. Seconds compare only between runs that trained at one time on one machine; the share does not
depend on the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from masterkey.research.experiments import time_to_reach, time_to_reach_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of masterkey experiments")
    for path in parser.parse_args().results:
        data = json.loads(path.read_text(encoding="utf-8"))
        table = time_to_reach_table(time_to_reach(data["runs"])) or "no runs with per-epoch accuracies"
        print(f"{data['experiment']} ({path}):\n\n{table}\n")


if __name__ == "__main__":
    main()
