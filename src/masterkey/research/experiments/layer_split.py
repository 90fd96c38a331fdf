"""``layer-split``: Yosinski-style AnB / BnB on two class halves, with the pointwise layers as the control."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..._timm import create_model
from ...bank import FilterBank
from ...errors import TrainingConfigError
from ...extract import find_depthwise_convs
from ...hub import load_master_filters
from ...training import BUILTIN_DATASETS, BuiltinDataset, ResolvedFilters
from ...training.outputs import WEIGHTS_NAME
from ..controls import inject_pointwise
from .config import ExperimentConfig
from .runner import _Runner, first_layers, source_bank

_logger = logging.getLogger(__name__)


def split_classes(dataset: str) -> tuple[BuiltinDataset, BuiltinDataset]:
    """Two datasets holding the first and the second half of the built-in ``dataset``'s classes (labels renumbered
    from 0), named ``<dataset>-A`` and ``<dataset>-B``.

    Example:
        >>> first, second = split_classes("digits")
        >>> first.name, second.name
        ('digits-A', 'digits-B')
    """
    if dataset not in BUILTIN_DATASETS:
        raise TrainingConfigError(
            f"layer-split splits a built-in dataset's classes; {dataset!r} is not one of "
            f"{', '.join(BUILTIN_DATASETS)}. Pick a built-in split_dataset."
        )
    parent = BUILTIN_DATASETS[dataset]
    half = len(parent.class_names) // 2
    halves = []
    for tag, classes in (("A", range(half)), ("B", range(half, len(parent.class_names)))):
        halves.append(BuiltinDataset(
            name=f"{dataset}-{tag}", class_names=tuple(parent.class_names[c] for c in classes),
            load=functools.partial(_class_subset, parent.load, tuple(classes)),
            description=f"classes {classes.start}-{classes.stop - 1} of {dataset}", source=parent.source,
            license=parent.license,
        ))  # fmt: skip
    return halves[0], halves[1]


def other_half(name: str) -> str | None:
    """The other class half of ``name`` (``animal-mnist-B`` -> ``animal-mnist-A``: :func:`split_classes`), ``None``
    for a name that is no class half of a built-in dataset.

    Example:
        >>> other_half("animal-mnist-B"), other_half("digits")
        ('animal-mnist-A', None)
    """
    parent, _, tag = name.rpartition("-")
    if tag not in ("A", "B") or parent not in BUILTIN_DATASETS:
        return None
    return f"{parent}-{'B' if tag == 'A' else 'A'}"


def split_halves(names: Iterable[str]) -> dict[str, BuiltinDataset]:
    """The class halves (:func:`split_classes`) among ``names``: each ``<dataset>-A`` or ``<dataset>-B`` of a built-in
    dataset, by name, so that the regime pilot and the lr-sweep can tune on a half as layer-split trains on it.

    Example:
        >>> list(split_halves(["animal-mnist-B", "digits"]))
        ['animal-mnist-B']
    """
    names, halves = list(names), {}
    for name in names:
        if other_half(name) is not None:
            halves.update({half.name: half for half in split_classes(name.rpartition("-")[0])})
    return {name: halves[name] for name in names if name in halves}


def _class_subset(load: Callable[[], tuple[np.ndarray, np.ndarray]], classes: tuple[int, ...]):
    images, labels = load()
    keep = np.isin(labels, classes)
    return images[keep], np.searchsorted(np.array(classes), labels[keep])


def pointwise_filters(source_folder: Path, n_depthwise: int, *, bank: FilterBank) -> tuple[str, Callable]:
    """The pointwise control of the layer-split experiment as a ``--filters`` name and the function that resolves it:
    the pointwise (1x1) convs of a trained source network in the same first share of the network as its first
    ``n_depthwise`` depthwise convs, copied and frozen
    (:func:`masterkey.research.controls.inject_pointwise`); every other
    parameter, depthwise included, trains. ``bank`` (the source network's depthwise bank) records where the layers
    came from. Both are plain functions and partials, so a run in another process (``jobs``) receives them.

    Example:
        >>> from masterkey import load_master_filters
        >>> source = Path("outputs/experiments/layer-split/sources/tf_efficientnet_lite0-animal-mnist-A")
        >>> name, resolve = pointwise_filters(source, 8, bank=load_master_filters(source / "bank-all"))
    """
    name = f"pointwise:{source_folder}:{n_depthwise}"
    return name, functools.partial(_resolve_pointwise, name, source_folder, n_depthwise, bank)


def _inject_pointwise(source_folder: Path, n_depthwise: int, model: nn.Module, *, strict: bool, freeze: bool,
                      trainable: str, mapping: str) -> nn.Module:  # fmt: skip
    return inject_pointwise(model, source_folder / WEIGHTS_NAME, first_depthwise=n_depthwise, strict=strict,
                            freeze=freeze, trainable=trainable, source=f"pointwise convs of {source_folder}")  # fmt: skip


def _resolve_pointwise(name: str, source_folder: Path, n_depthwise: int, bank: FilterBank,
                       model: nn.Module) -> ResolvedFilters:  # fmt: skip
    return ResolvedFilters(name, bank, inject=functools.partial(_inject_pointwise, source_folder, n_depthwise))


def layer_split(run: _Runner) -> dict[str, Any]:
    """AnB / BnB with the first n depthwise layers copied and frozen, and the pointwise control. The A and B networks
    come from the scale's :meth:`~.config.Scale.source_groups` (one pair, or several: each serves its share of the
    seeds, so the intervals span source networks).

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> results = run_experiment("layer-split", scale="quick", out_dir="outputs/experiments")
    """
    model = run.config.model
    halves = split_classes(run.config.split_dataset)
    run.datasets.update({half.name: half for half in halves})
    half_a, half_b = (half.name for half in halves)
    origins = {tag: half for tag, half in (("AnB", half_a), ("BnB", half_b)) if tag in run.config.split_arms}
    n_layers = len(find_depthwise_convs(create_model(model)))
    steps = layer_steps(run.config, n_layers)
    run.cell("from scratch on B", "n=0", x=0, filters="none", dataset_name=half_b)  # n = 0 is the same for every arm
    for source_seed, seeds in run.scale.source_groups():
        # the pointwise control injects the networks' pointwise layers: their weights, not only their banks
        trained = run.source_models({f"{model}-{half}": {"dataset_name": half} for half in origins.values()},
                                    source_seed=source_seed, weights=True)  # fmt: skip
        base = {half: trained[f"{model}-{half}"] for half in origins.values()}
        banks = {half: load_master_filters(source_bank(base[half], name=half, dataset=half, model=model))
                 for half in base}  # fmt: skip
        for n in steps:
            for tag, origin in origins.items():
                dw = str(first_layers(banks[origin], n, base[origin]))
                pw, resolve = pointwise_filters(base[origin], n, bank=banks[origin])
                run.filters[pw] = resolve
                for label, filters in ((f"{tag} depthwise", dw), (f"{tag} pointwise", pw)):
                    run.cell(label, f"n={n}", x=n, filters=filters, no_strict=True, dataset_name=half_b, seeds=seeds,
                             source_seed=source_seed)  # fmt: skip
    # the pointwise control, paired by seed; and, with both arms, AnB against BnB (co-adaptation)
    contrasts = [[[f"{tag} depthwise", f"n={n}"], [f"{tag} pointwise", f"n={n}"]] for n in steps for tag in origins]
    if len(origins) == 2:
        contrasts += [[[f"AnB {kind}", f"n={n}"], [f"BnB {kind}", f"n={n}"]]
                      for n in steps for kind in ("depthwise", "pointwise")]  # fmt: skip
    return {"halves": [half_a, half_b], "layers": n_layers, "n": steps, "contrasts": contrasts}


def layer_steps(config: ExperimentConfig, n_layers: int) -> list[int]:
    """The numbers of first depthwise layers layer-split copies: the config's ``split_layers`` where it names them
    (each between 1 and ``n_layers``), else n = 1 and then every ``n_layers / layer_groups`` up to all of them.

    Raises:
        TrainingConfigError: a ``split_layers`` entry outside 1..n_layers.

    Example:
        >>> layer_steps(ExperimentConfig.from_dict({"scale": "full"}), 16)
        [1, 4, 8, 12, 16]
    """
    if config.split_layers is not None:
        wrong = [n for n in config.split_layers if not 1 <= n <= n_layers]
        if wrong:
            raise TrainingConfigError(f"split_layers {wrong} lie outside 1..{n_layers}, the depthwise layers of "
                                      f"{config.model}.")  # fmt: skip
        return sorted(set(config.split_layers))
    groups = config.scale.layer_groups
    return sorted({1, *(round(i * n_layers / groups) for i in range(1, groups + 1))})
