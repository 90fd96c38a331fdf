"""``source-size``: banks trained on shares of a source dataset, transferred frozen to a target."""

from __future__ import annotations

import logging
from typing import Any

from ...training import load_image_dataset
from .config import ExperimentConfig
from .runner import _Runner, source_bank

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
    ``dataset_train_samples`` of it where it names the target: a harder target)."""
    model, source, target = run.config.model, run.config.source, run.config.target
    arms = source_size_arms(run.config)
    subset = (run.scale.dataset_train_samples or {}).get(target)
    group = target if subset is None else f"{target}, {subset} training images"
    # before the sources: it does not use their filters, so --resume keeps it even when they are trained anew
    run.cell(group, "from scratch", x=0.0, filters="none", dataset_name=target)
    trained = run.source_models({f"{model}-{source}-{fraction:g}": {"dataset_name": source, "max_train_samples": count}
                                 for fraction, count in arms.values()})  # fmt: skip
    for label, (fraction, _) in arms.items():
        folder = trained[f"{model}-{source}-{fraction:g}"]
        bank = source_bank(folder, name=f"{fraction:.0%} of {source}", dataset=source, model=model)
        run.cell(group, label, x=fraction, filters=str(bank), dataset_name=target)
    return {"source": source, "target": target, "source_train_images": max(c for _, c in arms.values()),
            "target_train_images": subset}
