"""Write the lr-sweep's choice into an experiment config: ``learning_rates`` for every arm of the transfer matrix and
of source-size.

From scratch takes the rate the sweep chose for from scratch on its dataset; every frozen arm (the bank, the banks
trained on each dataset, the universal keys, frozen random filters, the extra banks, and on source-size's target the
banks trained on shares of its source) takes the rate the sweep chose for the bank on that dataset, unless the sweep
tuned that arm itself. Datasets the sweep did not run keep the rates the config gave them.

    python benchmarks/apply_lr_sweep.py outputs/rerun/lr-sweep/results.json benchmarks/configs/evidence-64px.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from masterkey.experiments import ExperimentConfig, best_learning_rates, source_size_arms, transfer_matrix_arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the lr-sweep's results.json")
    parser.add_argument("config", type=Path, help="experiment config JSON to update in place")
    args = parser.parse_args()
    sweep = json.loads(args.sweep.read_text())
    data = json.loads(args.config.read_text())
    config = ExperimentConfig.from_dict(data)
    best = best_learning_rates(sweep["runs"])
    sources, extra = transfer_matrix_arms(config, {d: "" for d in config.datasets})  # only the labels are used
    frozen = [label for label, filters in {**sources, **extra}.items() if filters != "none"]
    rates = {}
    for dataset, arms in best.items():
        bank_rate = arms[f"{config.bank} (frozen)"]
        labels = frozen + (list(source_size_arms(config)) if dataset == config.target else [])
        rates[dataset] = {"from scratch": arms["from scratch"],
                          **{label: arms.get(label, bank_rate) for label in labels}}  # fmt: skip
    data["learning_rates"] = {**data.get("learning_rates", {}), **rates}
    args.config.write_text(json.dumps(data, indent=1) + "\n")
    for dataset, arms in rates.items():
        print(dataset, json.dumps(arms))


if __name__ == "__main__":
    main()
