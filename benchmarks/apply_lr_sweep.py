"""Write the lr-sweep's choice into an experiment config: ``learning_rates`` for every arm of the transfer matrix and
of source-size.

From scratch takes the rate the sweep chose for from scratch on its dataset; every frozen arm (the bank, the banks
trained on each dataset, the universal keys, frozen random filters, the extra banks, and on source-size's target the
banks trained on shares of its source) takes the rate the sweep chose for the bank on that dataset, unless the sweep
tuned that arm itself. Datasets the sweep did not run keep the rates the config gave them.

A sweep of ``tuning_models`` (the cross-family experiment) tuned every arm of every target architecture itself: each
arm takes its own rate, by architecture; ``--model M --dataset D`` instead takes architecture M's rows as the sweep
of dataset D (a transfer matrix of M on D tuned by that sweep). ``--one-rate`` writes from scratch's rate as the
scale's ``learning_rate``, the rate of every arm and source network (the layer split, whose arms should differ only
in which layers are frozen).

Where an arm's best rate lies at an edge of the swept range, the script writes the one step beyond it into the
config's ``sweep_extra_rates`` instead and exits with status 3: run the sweep again (``--resume`` keeps the runs that
finished), then this script again. An arm is extended once.

``--regime`` writes the regime pilot's budgets (the smallest budget at which from scratch converged): per
architecture into ``model_epochs`` for a pilot of ``tuning_models``, else per dataset into the scale's
``dataset_epochs``, where a class half's budget (``animal-mnist-B``) is its other half's too (the layer split's
source networks train on it). It can run without a sweep.

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
    edge_extensions,
    source_size_arms,
    transfer_matrix_arms,
)

#: The exit status when a choice lay at an edge of the swept range: the config now names the step beyond it
#: (``sweep_extra_rates``); run the sweep again with --resume, then this script again.
EXIT_SWEEP_AGAIN = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+", metavar="[SWEEP] CONFIG",
                        help="the lr-sweep's results.json (optional with --regime), then the experiment config JSON to "
                        "update in place")  # fmt: skip
    parser.add_argument("--regime", type=Path, help="the regime pilot's results.json")
    parser.add_argument("--model", help="with --dataset: take this architecture's rows of a tuning_models sweep")
    parser.add_argument("--dataset", help="with --model: the dataset those rows tune")
    parser.add_argument("--one-rate", action="store_true",
                        help="write from scratch's rate as the scale's learning_rate, every arm's")  # fmt: skip
    args = parser.parse_args()
    if (args.model is None) != (args.dataset is None):
        parser.error("--model and --dataset go together")
    if len(args.paths) > 2 or (len(args.paths) == 1 and args.regime is None):
        parser.error("give the sweep's results.json and the config, or --regime RESULTS and the config")
    config_path = args.paths[-1]
    data = json.loads(config_path.read_text())
    config = ExperimentConfig.from_dict(data)
    if args.regime is not None:
        pilot = json.loads(args.regime.read_text())
        if pilot["config"].get("tuning_models"):
            budgets = chosen_budgets(pilot["runs"])
            data["model_epochs"] = {**data.get("model_epochs", {}), **budgets}
        else:
            budgets = chosen_budgets(pilot["runs"], by="dataset")  # a class half's is its other half's too
            scale = data.setdefault("scale", {})
            scale["dataset_epochs"] = {**scale.get("dataset_epochs", {}), **budgets}
        print("epochs", json.dumps(budgets))
    if len(args.paths) == 1:
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        return
    sweep = json.loads(args.paths[0].read_text())
    best = best_learning_rates(sweep["runs"])
    extensions = edge_extensions(sweep["runs"], sweep["config"]["sweep_learning_rates"])
    if args.model is not None:
        extensions = {k: v for k, v in extensions.items() if k == args.model}
    if extensions:  # the plan's rule: a choice at an edge of the range is swept one step further first
        extra = data.setdefault("sweep_extra_rates", {})
        for key, arms in extensions.items():
            extra.setdefault(key, {}).update({arm: list(rates) for arm, rates in arms.items()})
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        print("edge of the range, sweep one step further first:", json.dumps(extensions))
        raise SystemExit(EXIT_SWEEP_AGAIN)
    if args.model is not None:  # one architecture's rows of a sweep of tuning_models, as a dataset's sweep
        best = {args.dataset: best[args.model]}
    elif config.tuning_models:  # every arm of every architecture was swept: each keeps its own rate
        data["learning_rates"] = {**data.get("learning_rates", {}), **best}
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        for model, arms in best.items():
            print(model, json.dumps(arms))
        return
    if args.one_rate:
        (rate,) = {arms["from scratch"] for arms in best.values()}
        data.setdefault("scale", {})["learning_rate"] = rate
        config_path.write_text(json.dumps(data, indent=1) + "\n")
        print("every arm", rate)
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
