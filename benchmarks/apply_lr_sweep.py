"""Write the lr-sweep's choice into an experiment config: ``learning_rates`` for every arm of the transfer matrix and
of source-size.

From scratch takes the rate the sweep chose for from scratch on its dataset; every frozen arm (the bank, the banks
trained on each dataset, the universal keys, frozen random filters, the extra banks, and on source-size's target the
banks trained on shares of its source) takes the rate the sweep chose for the bank on that dataset, unless the sweep
tuned that arm itself. Datasets the sweep did not run keep the rates the config gave them.

A sweep of ``tuning_models`` (the cross-family experiment) tuned every arm of every target architecture itself: each
arm takes its own rate, by architecture. ``--regime`` writes the regime pilot's budgets per architecture
(``model_epochs``: the smallest budget at which from scratch converged) and can run without a sweep.

    python benchmarks/apply_lr_sweep.py outputs/rerun/lr-sweep/results.json benchmarks/configs/evidence-64px.json
    python benchmarks/apply_lr_sweep.py --regime outputs/cross-family/regime/results.json \
        benchmarks/configs/cross-family-64px.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from masterkey.research.experiments import (
    ExperimentConfig,
    best_learning_rates,
    chosen_budgets,
    source_size_arms,
    transfer_matrix_arms,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+", metavar="[SWEEP] CONFIG",
                        help="the lr-sweep's results.json (optional with --regime), then the experiment config JSON to "
                        "update in place")  # fmt: skip
    parser.add_argument("--regime", type=Path, help="the regime pilot's results.json (run with tuning_models)")
    args = parser.parse_args()
    if len(args.paths) > 2 or (len(args.paths) == 1 and args.regime is None):
        parser.error("give the sweep's results.json and the config, or --regime RESULTS and the config")
    config_path = args.paths[-1]
    data = json.loads(config_path.read_text())
    config = ExperimentConfig.from_dict(data)
    if args.regime is not None:
        budgets = chosen_budgets(json.loads(args.regime.read_text())["runs"])
        data["model_epochs"] = {**data.get("model_epochs", {}), **budgets}
        print("epochs", json.dumps(budgets))
    if len(args.paths) == 1:
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        return
    best = best_learning_rates(json.loads(args.paths[0].read_text())["runs"])
    if config.tuning_models:  # every arm of every architecture was swept: each keeps its own rate
        data["learning_rates"] = {**data.get("learning_rates", {}), **best}
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        for model, arms in best.items():
            print(model, json.dumps(arms))
        return
    sources, extra = transfer_matrix_arms(config, {d: "" for d in config.datasets})  # only the labels are used
    frozen = [label for label, filters in {**sources, **extra}.items() if filters != "none"]
    rates = {}
    for dataset, arms in best.items():
        bank_rate = arms[f"{config.bank} (frozen)"]
        labels = frozen + (list(source_size_arms(config)) if dataset == config.target else [])
        rates[dataset] = {"from scratch": arms["from scratch"],
                          **{label: arms.get(label, bank_rate) for label in labels}}  # fmt: skip
    data["learning_rates"] = {**data.get("learning_rates", {}), **rates}
    config_path.write_text(json.dumps(data, indent=1) + "\n")
    for dataset, arms in rates.items():
        print(dataset, json.dumps(arms))


if __name__ == "__main__":
    main()
