"""``across-architectures``: a bank in other families by each mapping rule named, against scratch and frozen random
filters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..._timm import create_model
from ...bank import FilterBank
from ...extract import DepthwiseConv, find_depthwise_convs
from ...hub import load_master_filters
from ...mapping import STRUCTURAL_MAPPINGS, resolve_mapping
from .config import variant_of
from .runner import _Runner

_logger = logging.getLogger(__name__)


def across_architectures(run: _Runner) -> dict[str, Any]:
    """The bank (the ImageNet lite0 bank by default) in other families, against scratch and frozen random filters
    (and, in families with 7x7 kernels, the learned and idealized universal keys), on the ``target`` dataset; then
    each of the config's ``model_variants`` against its own from-scratch cell.

    Example:
        >>> from masterkey.research.experiments import run_experiment
        >>> results = run_experiment("across-architectures", scale="quick", out_dir="outputs/experiments")
    """
    targets, dataset, bank = run.config.architectures, run.config.target, run.config.bank
    source = load_master_filters(bank)
    trained: dict[str, list[str]] = {}
    structural = any(m in STRUCTURAL_MAPPINGS for m in run.config.mappings)  # a forward pass only where a rule needs it
    for model in targets[: run.scale.max_targets]:
        convs = find_depthwise_convs(create_model(model), feature_strides=structural)
        mappings = distinct_mappings(source, convs, run.config.mappings)
        cells = {"from scratch": ("none", "depth"),
                 **{f"{bank} (frozen, mapping={m})": (bank, m) for m in mappings},
                 "random (frozen)": ("random", "depth")}  # fmt: skip
        # the learned keys exist at 7x7 only: where the model's kernels are 7x7 both key sets are compared
        sevens = {c.spec.kernel_size for c in convs} == {(7, 7)}
        universal = {"universal learned 8 (frozen)": ("universal-learned", "depth"),
                     "universal idealized 8 (frozen)": ("universal-idealized", "depth")} if sevens else {}  # fmt: skip
        for label, (filters, mapping) in {**cells, **universal}.items():
            run.cell(model, label, model=model, filters=filters, mapping=mapping, dataset_name=dataset)
        trained[model] = list(mappings)
    variants = []
    for variant in run.config.model_variants:
        model, kwargs = variant_of(variant)
        tag = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        for label, filters in (("from scratch", "none"), (f"{bank} (frozen, mapping=depth)", bank)):
            run.cell(f"{model} ({tag})", label, model=model, model_kwargs=kwargs, filters=filters, mapping="depth",
                     dataset_name=dataset, pair=tag)  # fmt: skip
        variants.append({"model": model, "model_kwargs": kwargs})
    # paired by seed: each mapping rule against frozen random filters, and each further rule against the first
    contrasts = [[[model, f"{bank} (frozen, mapping={m})"], [model, "random (frozen)"]]
                 for model, rules in trained.items() for m in rules]  # fmt: skip
    contrasts += [[[model, f"{bank} (frozen, mapping={m})"], [model, f"{bank} (frozen, mapping={rules[0]})"]]
                  for model, rules in trained.items() for m in rules[1:]]  # fmt: skip
    return {"targets": list(targets), "dataset": dataset, "mappings": list(run.config.mappings),
            "mappings_trained": trained, "model_variants": variants, "contrasts": contrasts}  # fmt: skip


def distinct_mappings(bank: FilterBank, targets: list[DepthwiseConv], mappings: Sequence[str]) -> tuple[str, ...]:
    """The mapping rules of ``mappings`` that inject ``bank`` into ``targets`` differently: a rule whose plan (each
    target's source entry) equals an earlier rule's is left out, as ``size`` is where the bank has none of the
    targets' kernel sizes and injects as ``stage`` does.

    Example:
        >>> distinct_mappings(load_master_filters("imagenet-lite0"), find_depthwise_convs(convnext), ("stage", "size"))
        ('stage',)
    """
    first: dict[tuple, str] = {}  # plan -> the first rule that gives it
    for mapping in mappings:
        plan = tuple(sorted(resolve_mapping(bank, targets, mapping).items()))
        if plan in first:
            _logger.info("mapping=%s injects as mapping=%s does here: one arm", mapping, first[plan])
            continue
        first[plan] = mapping
    return tuple(first.values())
