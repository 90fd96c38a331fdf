"""Injecting a filter bank into a model, freezing it, and choosing what else trains.

Injection runs in three steps, each replaceable:

1. find the model's depthwise convs (:func:`masterkey.find_depthwise_convs`);
2. *match* each target conv to a bank entry (``mapping``: ``"exact"`` matches module paths, ``"depth"`` matches
   across architectures by relative depth, see :mod:`masterkey.mapping`);
3. *fit* the source kernel to the target's shape and copy it: the exact mapping requires equal shapes, the others
   select channels and resize kernels (:func:`masterkey.fit_kernel`).

Every target conv gets an :class:`InjectionEntry` in the :class:`InjectionReport` attached to the model as
``model.masterkey_report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from . import _timm
from .bank import FilterBank
from .errors import IncompatibleBankError
from .extract import DepthwiseConv, find_depthwise_convs, prepare_model
from .mapping import MappingFn, check_resize, fit_kernel, kernel_orientation, resolve_mapping, unmapped_reason

__all__ = [
    "from_pretrained_filters",
    "freeze_depthwise",
    "trainable_parameters",
    "InjectionEntry",
    "InjectionReport",
    "TrainableParameters",
    "TRAINABLE_POLICIES",
]

#: What trains besides the depthwise kernels. ``"all-but-depthwise"``: every other parameter (the paper's setting,
#: depthwise biases included); ``"pointwise+head"``: only 1x1 convs, linear layers and the classifier (norms, stem and
#: other spatial convs frozen); ``"all"``: nothing is frozen (the from-scratch baseline).
TRAINABLE_POLICIES = ("all-but-depthwise", "pointwise+head", "all")

class TrainableParameters(NamedTuple):
    """Trainable and total parameter counts; prints in PEFT's form."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || trainable%: {self.percent:.4f}"


@dataclass
class InjectionEntry:
    """What happened to one target depthwise conv."""

    target: str
    source: str | None
    injected: bool
    transforms: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class InjectionReport:
    """The record of one injection: every target conv, what it received, and what trains now."""

    bank: str
    mapping: str
    entries: list[InjectionEntry]
    unused: list[str]
    frozen: bool
    trainable_policy: str
    parameters: TrainableParameters

    @property
    def injected(self) -> list[InjectionEntry]:
        return [e for e in self.entries if e.injected]

    @property
    def skipped(self) -> list[InjectionEntry]:
        return [e for e in self.entries if not e.injected]

    def table(self) -> str:
        """A plain-text table, one row per target depthwise conv."""
        rows = [("target", "source", "status", "transforms / reason")]
        for e in self.entries:
            rows.append(
                (e.target, e.source or "-", "injected" if e.injected else "untouched", ", ".join(e.transforms) or e.reason)
            )
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        return "\n".join(lines)

    def __str__(self) -> str:
        state = "frozen" if self.frozen else "trainable"
        head = (
            f"Injected {len(self.injected)}/{len(self.entries)} depthwise convs from {self.bank} "
            f"(mapping={self.mapping}, depthwise {state}, trainable={self.trainable_policy!r})"
        )
        tail = [f"bank entries not used: {len(self.unused)}"] if self.unused else []
        return "\n".join([head, self.table(), *tail, str(self.parameters)])


def trainable_parameters(model: nn.Module) -> TrainableParameters:
    """Count trainable and total parameters (shared parameters counted once).

    Example:
        >>> print(masterkey.trainable_parameters(model))
        trainable params: 2,973,962 || all params: 3,158,426 || trainable%: 94.1588
    """
    params = {id(p): p for p in model.parameters()}.values()
    return TrainableParameters(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def freeze_depthwise(
    model: nn.Module,
    *,
    trainable: str = "all-but-depthwise",
    freeze: bool = True,
    convs: list[DepthwiseConv] | None = None,
) -> TrainableParameters:
    """Freeze the depthwise kernels of ``model`` and set what else trains (see :data:`TRAINABLE_POLICIES`).

    For users who bring their own weights: the same policies :func:`from_pretrained_filters` applies.
    ``freeze=False`` leaves the depthwise kernels trainable and applies the policy to the rest.

    Example:
        >>> print(masterkey.freeze_depthwise(model, trainable="pointwise+head"))
        trainable params: ... || all params: ... || trainable%: ...
    """
    if trainable not in TRAINABLE_POLICIES:
        raise ValueError(f"trainable={trainable!r} is not a policy; choose one of {', '.join(TRAINABLE_POLICIES)}.")
    convs = find_depthwise_convs(model) if convs is None else convs
    if trainable == "all":
        trainable_ids = {id(p) for p in model.parameters()}
    elif trainable == "all-but-depthwise":
        trainable_ids = {id(p) for p in model.parameters()} - {id(c.module.weight) for c in convs}
    else:  # pointwise+head
        trainable_ids = _timm.classifier_parameters(model)
        for module in model.modules():
            if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
                trainable_ids |= {id(p) for p in module.parameters(recurse=False)}
    if not freeze:
        trainable_ids |= {id(c.module.weight) for c in convs}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable_ids)
    return trainable_parameters(model)


def from_pretrained_filters(
    model: nn.Module | str,
    filters: FilterBank | str | Path,
    *,
    strict: bool = True,
    freeze: bool = True,
    trainable: str = "all-but-depthwise",
    mapping: str | MappingFn = "exact",
    resize: str = "geometric",
    reparameterize: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """Inject a master-key filter bank into ``model``'s depthwise convs and freeze them.

    Args:
        model: an ``nn.Module`` (changed in place and returned) or a timm model name, created with
            ``timm.create_model(name, pretrained=False, **model_kwargs)``.
        filters: a :class:`FilterBank`, a Hub repo id or a local folder (loaded with :func:`load_master_filters`).
        strict: refuse (:class:`IncompatibleBankError`) when any target conv is left untouched (no bank entry, a
            shape that differs under ``"exact"``, a band kernel with no band in the bank); with ``False`` the convs
            that match are injected and the rest reported.
        freeze: set ``requires_grad=False`` on the injected kernels.
        trainable: what else trains, one of :data:`TRAINABLE_POLICIES`.
        mapping: how target convs find their bank entry: ``"exact"`` (same module path, same shape), ``"depth"``
            (any architecture: nearest relative depth, see :func:`masterkey.match_by_depth`) or a callable
            ``(bank, targets) -> {target: source or None}``. Except under ``"exact"``, kernels whose channel count or
            size differ are fitted with :func:`masterkey.fit_kernel`, and the report lists each transform.
        resize: how a kernel of another size is fitted (:data:`masterkey.mapping.RESIZE_METHODS`): ``"geometric"``
            (centre-crop, zero-pad or resample) or ``"universal"`` (re-rendered from its best universal key).
        reparameterize: fuse multi-branch blocks (FastViT, RepViT, MobileOne) in place first; without it such
            models are refused.

    Returns:
        The model, with the :class:`InjectionReport` as ``model.masterkey_report``.

    Example:
        >>> import masterkey
        >>> model = masterkey.from_pretrained_filters("tf_efficientnet_lite0", "org/lite0-imagenet-dw", num_classes=10)
        >>> print(model.masterkey_report.parameters)
        trainable params: 3,201,562 || all params: 3,383,578 || trainable%: 94.6207
        >>> model = masterkey.from_pretrained_filters("convnext_atto", "org/lite0-imagenet-dw", mapping="depth")
        >>> print(model.masterkey_report.entries[0].transforms)
        ['channels 32->40 evenly spaced', 'kernel 3x3->7x7 zero-pad']
    """
    check_resize(resize)
    if not isinstance(filters, FilterBank):
        from .hub import load_master_filters

        filters = load_master_filters(filters)
    model = prepare_model(model, reparameterize=reparameterize, **model_kwargs)
    targets = find_depthwise_convs(model)
    plan = resolve_mapping(filters, targets, mapping)

    entries, updates, mismatched = [], [], {}
    for target in targets:
        source = plan[target.name]
        if source is None:
            entries.append(InjectionEntry(target.name, None, False, reason=unmapped_reason(filters, target)))
            continue
        kernel, want = filters[source], tuple(target.module.weight.shape)
        got = tuple(kernel.shape)
        if got != want and (mapping == "exact" or kernel_orientation(got[2:]) != kernel_orientation(want[2:])):
            mismatched[target.name] = (want, got)
            reason = f"shape {got} in the bank, {want} in the model"
            entries.append(InjectionEntry(target.name, source, False, reason=reason))
            continue
        kernel, transforms = fit_kernel(kernel, out_channels=want[0], kernel_size=want[2:], resize=resize)
        entries.append(InjectionEntry(target.name, source, True, transforms=transforms or ["copied"]))
        updates.append((target, kernel))

    used = {e.source for e in entries if e.injected}
    if strict and len(updates) < len(targets):
        missing = [e.target for e in entries if e.source is None]
        why = {e.target: e.reason for e in entries if e.source is None}
        hint = " mapping='depth' to fit a bank from another architecture," if mapping == "exact" else ""
        raise IncompatibleBankError(
            f"The bank from {filters.config.get('source_model') or 'an unknown model'} does not fit "
            f"{_timm.model_name(model) or type(model).__name__}: {len(missing)} depthwise convs have no bank entry "
            f"(e.g. {dict(list(why.items())[:3])}), {len(mismatched)} differ in shape "
            f"(e.g. {dict(list(mismatched.items())[:3])}). Pass strict=False to inject only what fits,{hint} "
            "or use a bank extracted from this architecture.",
            missing=missing,
            mismatched=mismatched,
            unexpected=[n for n in filters.names if n not in used],
        )

    with torch.no_grad():
        for target, kernel in updates:
            weight = target.module.weight
            weight.copy_(kernel.to(dtype=weight.dtype, device=weight.device))

    # only injected kernels are frozen: a conv left untouched (strict=False) keeps training
    parameters = freeze_depthwise(model, trainable=trainable, freeze=freeze, convs=[t for t, _ in updates])
    model.masterkey_report = InjectionReport(
        bank=repr(filters),
        mapping=mapping if isinstance(mapping, str) else getattr(mapping, "__name__", "callable"),
        entries=entries,
        unused=[n for n in filters.names if n not in used],
        frozen=freeze and trainable != "all",
        trainable_policy=trainable,
        parameters=parameters,
    )
    return model
