"""``source-size``: banks trained on shares of a source dataset, transferred frozen to a target."""

from __future__ import annotations

import logging
from typing import Any

from ...training import load_image_dataset
from .config import ExperimentConfig
from .runner import _Runner, source_bank
from .transfer_matrix import main_arms

_logger = logging.getLogger(__name__)


def source_size_arms(config: ExperimentConfig) -> dict[str, tuple[float, int]]:
    """source-size's banks, cell label -> (share, images): the share of the source's training images (10%, 30% and
    100% of them, or of the scale's ``source_train_samples``) its source network trains on, and how many that is.

    Example:
        >>> source_size_arms(ExperimentConfig.from_dict({"scale": "full"}))
        {'10% of animal-mnist (800 images)': (0.1, 800), '30% of animal-mnist (2400 images)': (0.3, 2400), ...}
    """
    n_train = len(load_image_dataset(config.source)["train"])
    cap = config.scale.source_train_samples
    full = min(n_train, cap) if cap else n_train
    counts = {fraction: max(1, round(fraction * full)) for fraction in (0.1, 0.3, 1.0)}
    return {f"{fraction:.0%} of {config.source} ({count} images)": (fraction, count)
            for fraction, count in counts.items()}  # fmt: skip


def source_size(run: _Runner) -> dict[str, Any]:
    """Banks trained on 10%, 30% and 100% of the source's training examples, frozen on the target (on the scale's
    ``dataset_train_samples`` of it where it names the target: a harder target), beside the config's
    ``source_size_controls`` (the pretrained bank, frozen random filters). Each share's source networks come from
    the scale's :meth:`~.config.Scale.source_groups` (one, or several: each serves its share of the seeds).

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> results = run_experiment("source-size", scale="quick", out_dir="outputs/experiments")
    """
    model, source, target = run.config.model, run.config.source, run.config.target
    arms = source_size_arms(run.config)
    subset = (run.scale.dataset_train_samples or {}).get(target)
    group = target if subset is None else f"{target}, {subset} training images"
    # before the sources: they do not use their filters, so --resume keeps them even when the sources are trained anew
    run.cell(group, "from scratch", x=0.0, filters="none", dataset_name=target)
    controls = main_arms(run.config.bank, run.config.source_size_controls)
    for label, filters in controls.items():
        run.cell(group, label, filters=filters, mapping=run.config.mapping, dataset_name=target)
    for source_seed, seeds in run.scale.source_groups():
        trained = run.source_models({f"{model}-{source}-{fraction:g}": {"dataset_name": source,
                                                                         "max_train_samples": count}
                                     for fraction, count in arms.values()}, source_seed=source_seed)  # fmt: skip
        for label, (fraction, _) in arms.items():
            folder = trained[f"{model}-{source}-{fraction:g}"]
            bank = source_bank(folder, name=f"{fraction:.0%} of {source}", dataset=source, model=model)
            run.cell(group, label, x=fraction, filters=str(bank), dataset_name=target, seeds=seeds,
                     source_seed=source_seed)  # fmt: skip
    # paired by seed: every share against the others' largest, and against each control
    labels = list(arms)
    contrasts = [[[group, labels[-1]], [group, other]] for other in labels[:-1]]
    contrasts += [[[group, label], [group, control]] for control in controls for label in labels]
    return {"source": source, "target": target, "source_train_images": max(c for _, c in arms.values()),
            "target_train_images": subset, "controls": list(controls), "contrasts": contrasts}
