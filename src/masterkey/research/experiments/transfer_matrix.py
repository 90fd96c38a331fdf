"""``transfer-matrix``: frozen filters from several sources on each dataset, against training from scratch."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import TrainingConfigError
from ...hub import load_master_filters
from ...training import slugify
from ...names import FITTED_PREFIX
from .config import ExperimentConfig
from .runner import _Runner, source_bank

_logger = logging.getLogger(__name__)


def transfer_matrix(run: _Runner) -> dict[str, Any]:
    """Frozen filters from each source on each built-in dataset, against from scratch. Each dataset's own bank comes
    from the source networks of the scale's :meth:`~.config.Scale.source_groups` (one, or several: each serves its
    share of the seeds).

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> results = run_experiment("transfer-matrix", scale="quick", out_dir="outputs/experiments")
    """
    model, bank = run.config.model, run.config.bank
    groups = run.scale.source_groups()
    own_banks: dict[int, dict[str, str]] = {}  # source seed -> dataset -> bank folder
    for source_seed, _ in groups:
        trained = run.source_models({f"{model}-{d}": {"dataset_name": d} for d in run.config.datasets},
                                    source_seed=source_seed)  # fmt: skip
        own_banks[source_seed] = {d: str(source_bank(trained[f"{model}-{d}"], name="source", dataset=d, model=model))
                                  for d in run.config.datasets}  # fmt: skip
    for i, (source_seed, _) in enumerate(groups):  # kept beside the results: the cards are built from the first
        for dataset, folder in own_banks[source_seed].items():
            tag = slugify(dataset) if i == 0 else f"{slugify(dataset)}__source{source_seed}"
            load_master_filters(folder).save_pretrained(run.out_dir / "banks" / tag)
    sources, extra = transfer_matrix_arms(run.config, own_banks[groups[0][0]])
    sourced = {f"{d} bank (frozen)" for d in run.config.datasets}  # the arms whose filters depend on the source
    longer = main_arms(bank, ("none", "bank"))  # compared with each other at the longer budget
    targets = run.config.datasets[: run.scale.max_targets]
    extra_targets = [t for t in targets
                     if run.config.extra_banks_datasets is None or t in run.config.extra_banks_datasets]  # fmt: skip
    for target in targets:
        for label, filters in sources.items():
            if label not in sourced:
                run.cell(target, label, filters=filters, mapping=run.config.mapping, dataset_name=target)
                continue
            dataset = label.removesuffix(" bank (frozen)")
            for source_seed, seeds in groups:
                run.cell(target, label, filters=own_banks[source_seed][dataset], mapping=run.config.mapping,
                         dataset_name=target, seeds=seeds, source_seed=source_seed)  # fmt: skip
        if target in run.config.long_epochs:
            epochs = run.config.long_epochs[target]
            for label, filters in longer.items():
                run.cell(f"{target}, {epochs} epochs", label, filters=filters, mapping=run.config.mapping,
                         num_train_epochs=epochs, dataset_name=target, pair=f"{epochs} epochs",
                         seeds=run.config.long_seeds)  # fmt: skip
        if target in extra_targets:
            for label, filters in extra.items():
                run.cell(target, label, filters=filters, mapping=run.config.extra_mapping, dataset_name=target)
    # paired by seed: the bank against frozen random filters (the filters, or freezing as such?), the 8 keys fitted
    # to it against the bank (do 8 filters do its work?), and each stronger (or other) source against the bank
    (fitted,) = main_arms(bank, ("fitted",))
    contrasts = [[[target, f"{bank} (frozen)"], [target, "random (frozen)"]] for target in targets]
    contrasts += [[[target, fitted], [target, f"{bank} (frozen)"]] for target in targets]
    contrasts += [[[target, label], [target, f"{bank} (frozen)"]] for target in extra_targets for label in extra]
    return {"sources": sources, "own_banks": own_banks[groups[0][0]],
            "source_networks": {str(seed): banks for seed, banks in own_banks.items()}, "extra_banks": extra,
            "long_epochs": dict(run.config.long_epochs), "contrasts": contrasts}  # fmt: skip


def transfer_matrix_arms(
    config: ExperimentConfig, own_banks: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The transfer matrix's arms under ``config``, cell label -> ``--filters``: the arms every target trains (from
    scratch, the bank, ``own_banks`` (dataset -> bank folder), the universal keys fitted and by channel, frozen random
    filters), and the ``extra_banks`` arms.

    Example:
        >>> sources, extra = transfer_matrix_arms(ExperimentConfig(), {"digits": "banks/digits"})
        >>> list(sources)[:3]
        ['from scratch', 'imagenet-lite0 (frozen)', 'digits bank (frozen)']
    """
    bank = config.bank
    sources = {**main_arms(bank, ("none", "bank")), **{f"{d} bank (frozen)": path for d, path in own_banks.items()},
               **main_arms(bank, ("fitted",)), "universal 8, key = channel mod 8 (frozen)": "universal-idealized",
               **main_arms(bank, ("random",))}  # fmt: skip
    extra = {f"{b} (frozen, mapping={config.extra_mapping})": b for b in config.extra_banks}
    return sources, extra


def main_arms(bank: str, kinds: Sequence[str] = ("none", "bank", "fitted", "random")) -> dict[str, str]:
    """The transfer matrix's main arms of ``kinds``, cell label -> ``--filters``: from scratch (``none``), the bank,
    the 8 universal keys ``fitted`` to it, frozen ``random`` filters (the lr-sweep tunes these; the labels are those
    of transfer-matrix).

    Raises:
        TrainingConfigError: an unknown kind.

    Example:
        >>> main_arms("imagenet-lite0", ("none", "bank", "random"))
        {'from scratch': 'none', 'imagenet-lite0 (frozen)': 'imagenet-lite0', 'random (frozen)': 'random'}
    """
    arms = {"none": ("from scratch", "none"), "bank": (f"{bank} (frozen)", bank),
            "fitted": (f"universal 8 fitted to {bank} (frozen)", FITTED_PREFIX + bank),
            "random": ("random (frozen)", "random")}  # fmt: skip
    unknown = sorted(set(kinds) - set(arms))
    if unknown:
        raise TrainingConfigError(f"Unknown arm kind(s) {unknown} in sweep_arms; choose from {', '.join(arms)}.")
    return dict(arms[kind] for kind in arms if kind in kinds)
