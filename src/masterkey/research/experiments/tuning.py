"""The experiments that choose the regime the others run in, scored on a validation split held out of the training data:
``regime`` (budgets) and ``lr-sweep`` (learning rates)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .layer_split import other_half, split_halves
from .runner import _model_epochs, _Runner
from .transfer_matrix import main_arms

_logger = logging.getLogger(__name__)


def regime(run: _Runner) -> dict[str, Any]:
    """The pilot that chooses the regime: each dataset from scratch (every parameter trainable) at each of
    ``pilot_resolutions`` and each of its ``pilot_epochs`` budgets, the first seed, scored on a validation split held
    out of the training data (never the test split). The chosen epochs go into the scale's ``dataset_epochs``.

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> config = "benchmarks/configs/cross-family-64px.json"
        >>> results = run_experiment("regime", config, out_dir="outputs/cross-family")
    """
    seed = run.scale.tuning_seeds
    run.datasets.update(split_halves([run.config.target, *run.config.datasets]))  # layer-split's class halves
    if run.config.tuning_models:
        dataset = run.config.target
        for model in run.config.tuning_models[: run.scale.max_targets]:
            for resolution in run.config.pilot_resolutions:
                for epochs in run.config.pilot_epochs.get(dataset, (run.scale.num_train_epochs,)):
                    run.cell(f"{model} {dataset} {resolution}px", f"{epochs} epochs", x=epochs, seeds=seed,
                             model=model, filters="none", trainable="all", resolution=resolution,
                             num_train_epochs=epochs, validation_from_train=True, dataset_name=dataset,
                             pair=f"{model} {dataset} {resolution}px {epochs}")  # fmt: skip
        return {"models": list(run.config.tuning_models), "dataset": dataset,
                "resolutions": list(run.config.pilot_resolutions),
                "epochs": {d: list(e) for d, e in run.config.pilot_epochs.items()}, "scored_on": "validation"}
    for dataset in run.config.datasets[: run.scale.max_targets]:
        for resolution in run.config.pilot_resolutions:
            for epochs in run.config.pilot_epochs.get(dataset, (run.scale.num_train_epochs,)):
                run.cell(f"{dataset} {resolution}px", f"{epochs} epochs", x=epochs, seeds=seed, filters="none",
                         trainable="all", resolution=resolution, num_train_epochs=epochs, validation_from_train=True,
                         dataset_name=dataset, pair=f"{dataset} {resolution}px {epochs}")  # fmt: skip
    return {"resolutions": list(run.config.pilot_resolutions),
            "epochs": {d: list(e) for d, e in run.config.pilot_epochs.items()}, "scored_on": "validation"}  # fmt: skip


def lr_sweep(run: _Runner) -> dict[str, Any]:
    """Each main arm (:func:`main_arms`) of each dataset at each of ``sweep_learning_rates``, in the scale's regime,
    the first seed, scored on a validation split held out of the training data (never the test split). The best
    rate per arm and dataset is in ``details["best"]``; the config's ``learning_rates`` takes it.

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> config = "benchmarks/configs/cross-family-64px.json"
        >>> results = run_experiment("lr-sweep", config, out_dir="outputs/cross-family")
        >>> results["details"]["best"]
    """
    seed = run.scale.tuning_seeds
    run.datasets.update(split_halves([run.config.target, *run.config.datasets]))  # layer-split's class halves
    arms = {**main_arms(run.config.bank, run.config.sweep_arms),
            **{f"{b} (frozen)": b for b in run.config.sweep_banks}}  # fmt: skip
    if run.config.tuning_models:
        dataset = run.config.target
        for model in run.config.tuning_models[: run.scale.max_targets]:
            for label, filters in arms.items():
                for rate in _rates(run, model, label):
                    run.cell(f"{model}: {label}", f"lr={rate:g}", x=rate, seeds=seed, model=model, filters=filters,
                             mapping="depth", learning_rate=rate, num_train_epochs=_model_epochs(run, model, dataset),
                             validation_from_train=True, dataset_name=dataset, pair=f"{model} lr={rate:g}")  # fmt: skip
        return {"models": list(run.config.tuning_models), "dataset": dataset, "arms": list(arms),
                "learning_rates": list(run.config.sweep_learning_rates), "scored_on": "validation"}
    for dataset in run.config.datasets[: run.scale.max_targets]:
        for label, filters in arms.items():
            for rate in _rates(run, dataset, label):
                run.cell(f"{dataset}: {label}", f"lr={rate:g}", x=rate, seeds=seed, filters=filters,
                         mapping=run.config.mapping, learning_rate=rate, validation_from_train=True,
                         dataset_name=dataset, pair=f"lr={rate:g}")  # fmt: skip
    return {"arms": list(arms), "learning_rates": list(run.config.sweep_learning_rates), "scored_on": "validation"}


def _rates(run: _Runner, key: str, label: str) -> list[float]:
    """The rates an arm tries: the sweep's, and the config's ``sweep_extra_rates`` for it."""
    extra = run.config.sweep_extra_rates.get(key, {}).get(label, ())
    return sorted({*run.config.sweep_learning_rates, *extra})


def edge_extensions(records: Sequence[Mapping[str, Any]],
                    rates: Sequence[float]) -> dict[str, dict[str, tuple[float, ...]]]:  # fmt: skip
    """Where the sweep's choice (:func:`best_learning_rates`) lies at an edge of the swept range ``rates``: the one
    step beyond it each such arm must try before any test-split run (a step is the ratio of the range's first two
    rates), as ``ExperimentConfig.sweep_extra_rates`` takes them. An arm whose best rate is already a step beyond the
    range is not extended again; ``{}`` when every choice lies inside.

    Example:
        >>> edge_extensions(runs, [2e-3, 4e-3, 8e-3])  # the bank's best was 8e-3
        {'tf_efficientnet_lite0': {'imagenet-lite0 (frozen)': (0.016,)}}
    """
    grid = sorted(rates)
    if len(grid) < 2:
        return {}
    step = grid[1] / grid[0]
    tried: dict[tuple[str, str], set[float]] = {}
    for r in records:
        key, arm = r["group"].split(": ", 1)
        tried.setdefault((key, arm), set()).add(r["learning_rate"])
    out: dict[str, dict[str, tuple[float, ...]]] = {}
    for key, arms in best_learning_rates(records).items():
        for arm, rate in arms.items():
            beyond = grid[0] / step if math.isclose(rate, grid[0]) else grid[-1] * step if math.isclose(
                rate, grid[-1]) else None  # fmt: skip
            if beyond is not None and not any(math.isclose(beyond, t) for t in tried[key, arm]):
                out.setdefault(key, {})[arm] = (float(f"{beyond:.6g}"),)
    return out


def best_learning_rates(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The lr-sweep's choice: dataset (or, when the sweep tuned ``tuning_models``, architecture) -> arm -> the
    learning rate of the highest validation accuracy (mean over the seeds run; ties to the smaller rate), in the form
    ``ExperimentConfig.learning_rates`` takes.

    Example:
        >>> best_learning_rates(run_experiment("lr-sweep", scale="quick")["runs"])
        {'digits': {'from scratch': 0.004, ...}, ...}
    """
    scores: dict[tuple[str, str, float], list[float]] = {}
    for r in records:
        key, arm = r["group"].split(": ", 1)  # "<dataset or architecture>: <arm>"
        scores.setdefault((key, arm, r["learning_rate"]), []).append(r["accuracy"])
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for (dataset, arm, rate), accuracies in sorted(scores.items(), key=lambda item: item[0][2]):
        score = float(np.mean(accuracies))
        if arm not in best.setdefault(dataset, {}) or score > best[dataset][arm][0]:
            best[dataset][arm] = (score, rate)
    return {dataset: {arm: rate for arm, (_, rate) in arms.items()} for dataset, arms in best.items()}


def chosen_budgets(records: Sequence[Mapping[str, Any]], *, by: str = "model") -> dict[str, int]:
    """The regime pilot's choice per architecture (a pilot with ``tuning_models``), or with ``by="dataset"`` per
    dataset (a pilot of ``datasets``): the smallest budget at which from scratch converged (:func:`learning_check`:
    its accuracy rose by less than ``CONVERGED_RISE`` over its last two epochs), else the largest budget tried, in the
    form ``ExperimentConfig.model_epochs`` (or the scale's ``dataset_epochs``) takes. A class half's budget is its
    other half's too, where that was not piloted (:func:`other_half`: the layer split trains its source network on
    the other half).

    Example:
        >>> chosen_budgets(run_experiment("regime", {"tuning_models": ["convnext_atto"]})["runs"])
        {'convnext_atto': 12}
    """
    budgets: dict[str, list[tuple[int, bool]]] = {}
    for r in records:
        budgets.setdefault(r[by], []).append((int(r["x"]), bool(r.get("converged"))))
    chosen = {key: min((e for e, converged in tried if converged), default=max(e for e, _ in tried))
              for key, tried in budgets.items()}  # fmt: skip
    if by == "dataset":
        for name, epochs in list(chosen.items()):
            if (other := other_half(name)) is not None:
                chosen.setdefault(other, epochs)
    return chosen
