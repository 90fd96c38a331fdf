"""``cross-family``: real ImageNet banks of two families in four target families, under a committed analysis plan."""

from __future__ import annotations

import logging
from typing import Any

from .runner import _model_epochs, _Runner

_logger = logging.getLogger(__name__)


def cross_family(run: _Runner) -> dict[str, Any]:
    """Real banks across families: each of ``family_targets`` on the ``target`` dataset from scratch, with frozen
    random kernels, and with each of ``family_banks`` frozen (``mapping="depth"``: by structure, so a bank of the
    target's own architecture lands one to one), each target for its own epochs (``model_epochs``, the pilot's
    choice) at each arm's swept rate (``learning_rates`` by target). A bank of the target's own family
    (``own_family``) is the within-family control for the others. The contrasts: each bank minus frozen random and
    minus scratch, and the own-family bank minus each other bank; then each bank by ``depth`` minus the same bank by
    another rule (``mapping_controls``, at the bank arm's rate).

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> results = run_experiment("cross-family", "benchmarks/configs/cross-family-64px.json",
        ...                          out_dir="outputs/cross-family", cpu_threads=1, jobs=2, resume=True)
    """
    dataset, banks = run.config.target, run.config.family_banks
    contrasts = []
    for model in run.config.family_targets[: run.scale.max_targets]:
        epochs = _model_epochs(run, model, dataset)
        arms = {"from scratch": "none", "random (frozen)": "random", **{f"{b} (frozen)": b for b in banks}}
        for label, filters in arms.items():
            run.cell(model, label, model=model, filters=filters, mapping="depth", num_train_epochs=epochs,
                     dataset_name=dataset, pair=model)  # fmt: skip
        for bank in banks:
            contrasts += [[[model, f"{bank} (frozen)"], [model, "random (frozen)"]],
                          [[model, f"{bank} (frozen)"], [model, "from scratch"]]]  # fmt: skip
        own = run.config.own_family.get(model)
        if own in banks:
            contrasts += [[[model, f"{own} (frozen)"], [model, f"{other} (frozen)"]] for other in banks if other != own]
        for bank, rules in run.config.mapping_controls.get(model, {}).items():
            rate = run.config.learning_rate(model, f"{bank} (frozen)")  # the rule is all that differs
            for rule in rules:
                label = f"{bank} (frozen, mapping={rule})"
                run.cell(model, label, model=model, filters=bank, mapping=rule, num_train_epochs=epochs,
                         dataset_name=dataset, pair=model, **({} if rate is None else {"learning_rate": rate}))
                contrasts.append([[model, f"{bank} (frozen)"], [model, label]])
    return {"targets": list(run.config.family_targets), "banks": list(banks), "dataset": dataset,
            "own_family": dict(run.config.own_family), "epochs": {m: _model_epochs(run, m, dataset)
                                                                  for m in run.config.family_targets},
            "contrasts": contrasts}  # fmt: skip
