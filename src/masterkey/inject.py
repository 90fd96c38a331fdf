"""Injecting weights into a model, freezing them, and choosing what else trains.

Every injector runs through one skeleton, :func:`inject` (in the spirit of PEFT's ``inject_adapter``):

1. **check** every argument (``trainable``, the injector's own) before the model is touched;
2. **prepare** the model (a timm name is created; reparameterizable blocks are fused when asked);
3. **plan**: *match* each target to a source and *fit* the source to the target's shape, changing nothing yet;
4. refuse (:class:`~masterkey.errors.IncompatibleBankError`) under ``strict`` when a target is left untouched;
5. **copy** the planned values, **freeze** the injected parameters and apply the ``trainable`` policy;
6. **report**: every target gets an :class:`InjectionEntry` in the :class:`InjectionReport` attached to the model as
   ``model.masterkey_report``.

Injectors: :func:`from_pretrained_filters` (a bank into the depthwise convs: ``mapping="exact"`` matches module
paths, ``"depth"`` matches across architectures, see :mod:`masterkey.mapping`), :func:`inject_pointwise` (a trained
network's first pointwise convs, the control of the layer-split experiment) and
:func:`masterkey.universal_injection.inject_universal` (the 8 universal keys).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from . import _timm
from .bank import FilterBank
from .errors import ArgumentError, IncompatibleBankError, MappingError
from .extract import DepthwiseConv, find_depthwise_convs, prepare_model
from .hub import load_master_filters
from .mapping import (
    MAPPINGS,
    STRUCTURAL_MAPPINGS,
    MappingFn,
    check_resize,
    fit_kernel,
    kernel_orientation,
    resolve_mapping,
    unmapped_reason,
)

__all__ = [
    "inject",
    "InjectionPlan",
    "check_trainable",
    "from_pretrained_filters",
    "freeze_depthwise",
    "trainable_parameters",
    "InjectionEntry",
    "InjectionReport",
    "TrainableParameters",
    "TRAINABLE_POLICIES",
]

_logger = logging.getLogger(__name__)

#: What trains besides the depthwise kernels. ``"all-but-depthwise"``: every other parameter (the paper's setting,
#: depthwise biases included); ``"pointwise+head"``: only 1x1 convs, linear layers and the classifier (norms, stem and
#: other spatial convs frozen); ``"all"``: nothing is frozen (the from-scratch baseline).
TRAINABLE_POLICIES = ("all-but-depthwise", "pointwise+head", "all")


def check_trainable(trainable: str) -> None:
    """Refuse (:class:`~masterkey.errors.ArgumentError`) a ``trainable`` policy not in :data:`TRAINABLE_POLICIES`.

    Example:
        >>> check_trainable("pointwise+head")  # one of TRAINABLE_POLICIES: returns None
        >>> check_trainable("depthwise")
        Traceback (most recent call last):
        masterkey.errors.ArgumentError: ...
    """
    if trainable not in TRAINABLE_POLICIES:
        raise ArgumentError(
            f"trainable={trainable!r} is not a policy; choose one of {', '.join(TRAINABLE_POLICIES)}."
        )

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
        """The entries whose target received a kernel.

        Example:
            >>> import masterkey, timm
            >>> bank = masterkey.load_master_filters("imagenet-lite0")
            >>> model = masterkey.from_pretrained_filters(timm.create_model("mobilenetv2_100"), bank, mapping="depth")
            >>> len(model.masterkey_report.injected), len(model.masterkey_report.skipped)
            (17, 0)
        """
        return [e for e in self.entries if e.injected]

    @property
    def skipped(self) -> list[InjectionEntry]:
        """The entries whose target kept its own kernel, each with the reason (see :attr:`injected`)."""
        return [e for e in self.entries if not e.injected]

    def table(self) -> str:
        """A plain-text table, one row per target depthwise conv.

        Example:
            >>> import masterkey, timm
            >>> bank = masterkey.load_master_filters("imagenet-lite0")
            >>> model = masterkey.from_pretrained_filters(timm.create_model("mobilenetv2_100"), bank, mapping="depth")
            >>> model.masterkey_report.table().splitlines()[0].split()
            ['target', 'source', 'status', 'transforms', '/', 'reason']
        """
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


#: Attribute set on a parameter that an injection froze, so that a later injection (or policy) keeps it frozen.
_FROZEN_MARK = "_masterkey_frozen"


def _apply_policy(model: nn.Module, *, trainable: str, freeze: bool, injected: Iterable[nn.Parameter]) -> None:
    """``requires_grad`` of every parameter: the ``trainable`` policy, with the ``injected`` parameters frozen (or,
    with ``freeze=False``, trainable) whatever the policy says, except under ``"all"``, where everything trains.
    Parameters an earlier injection froze stay frozen unless this call injects them again or says ``"all"``."""
    injected = list(injected)
    injected_ids = {id(p) for p in injected}
    earlier = {id(p) for p in model.parameters() if getattr(p, _FROZEN_MARK, False)} - injected_ids
    every = {id(p) for p in model.parameters()}
    if trainable == "all":
        trainable_ids = every
    elif trainable == "all-but-depthwise":
        trainable_ids = every - injected_ids
    else:  # pointwise+head
        trainable_ids = _timm.classifier_parameters(model)
        for module in model.modules():
            if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
                trainable_ids |= {id(p) for p in module.parameters(recurse=False)}
        trainable_ids -= injected_ids
    if trainable != "all":
        trainable_ids -= earlier
    if not freeze:
        trainable_ids |= injected_ids
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable_ids)
        if id(p) in injected_ids or trainable == "all":
            setattr(p, _FROZEN_MARK, not p.requires_grad)


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
    check_trainable(trainable)
    convs = find_depthwise_convs(model) if convs is None else convs
    _apply_policy(model, trainable=trainable, freeze=freeze, injected=[c.module.weight for c in convs])
    return trainable_parameters(model)


# -- the skeleton ----------------------------------------------------------------------------------------------------
@dataclass
class InjectionPlan:
    """What an injector will do to a model, decided before anything changes: one entry per target, the values to
    copy into which parameters, the bank entries left unused, and the targets whose shapes differ (for the
    error under ``strict``)."""

    entries: list[InjectionEntry]
    updates: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)


def inject(
    model: nn.Module | str,
    *,
    plan: Callable[[nn.Module], InjectionPlan],
    source: str,
    mapping: str,
    strict: bool = True,
    freeze: bool = True,
    trainable: str = "all-but-depthwise",
    reparameterize: bool = False,
    refuse: Callable[[nn.Module, InjectionPlan], IncompatibleBankError] | None = None,
    finish: Callable[[nn.Module, InjectionPlan], None] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The injection skeleton every injector runs: check, prepare, plan, refuse or copy, freeze, report (see the
    module docstring). Injectors check their own arguments before calling it; ``plan(model)`` matches and fits
    without changing the model, ``refuse(model, plan)`` builds the error raised under ``strict`` when a target is
    left untouched, and ``finish(model, plan)`` runs after the copy and the freeze (a parametrization, say).
    ``source`` and ``mapping`` name the source and the rule in the report.

    Example:
        >>> def plan(model):
        ...     conv = model.stem[0]
        ...     return InjectionPlan([InjectionEntry("stem.0", "mine", True)], updates=[(conv.weight, weights)])
        >>> model = inject("convnext_atto", plan=plan, source="my weights", mapping="stem only")
    """
    check_trainable(trainable)
    model = prepare_model(model, reparameterize=reparameterize, **(model_kwargs or {}))
    on_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if on_meta:
        raise ArgumentError(
            f"The model is on the meta device (e.g. {on_meta[0]}): its weights hold no values, so nothing can be "
            "copied into them. Materialize it first (model.to_empty(device='cpu'), then initialise or load weights)."
        )
    planned = plan(model)
    if strict and any(not e.injected for e in planned.entries):
        if refuse is None:
            skipped = [e.target for e in planned.entries if not e.injected]
            raise IncompatibleBankError(
                f"{len(skipped)} targets of {source} were left untouched (e.g. {skipped[:3]}). Pass strict=False to "
                "inject only what fits.",
                missing=skipped,
            )
        raise refuse(model, planned)
    with torch.no_grad():
        for parameter, value in planned.updates:
            parameter.copy_(value.to(dtype=parameter.dtype, device=parameter.device))
    # only what was injected is frozen: a target left untouched (strict=False) keeps training
    _apply_policy(model, trainable=trainable, freeze=freeze, injected=[p for p, _ in planned.updates])
    if finish is not None:
        finish(model, planned)
    injected = sum(e.injected for e in planned.entries)
    _logger.info("Injected %d/%d targets from %s (mapping=%s)", injected, len(planned.entries), source, mapping)
    model.masterkey_report = InjectionReport(
        bank=source,
        mapping=mapping,
        entries=planned.entries,
        unused=planned.unused,
        frozen=freeze and trainable != "all",
        trainable_policy=trainable,
        parameters=trainable_parameters(model),
    )
    return model


# -- injectors -------------------------------------------------------------------------------------------------------
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
            (any architecture, aligned by feature-map scale and position, see :func:`masterkey.match_by_depth`;
            ``"stage"`` and ``"size"`` are the earlier name-based rules) or a callable
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
    check_trainable(trainable)
    if isinstance(mapping, str) and mapping not in MAPPINGS:
        raise MappingError(f"mapping={mapping!r} is unknown; choose one of {', '.join(MAPPINGS)} or pass a callable.")
    if not isinstance(mapping, str) and not callable(mapping):
        raise MappingError(f"mapping must be a name ({', '.join(MAPPINGS)}) or a callable, not {type(mapping).__name__}.")
    if not isinstance(filters, (FilterBank, str, Path)):
        raise ArgumentError(
            f"filters must be a FilterBank, a Hub repo id or a local folder, not {type(filters).__name__}. Build a bank "
            "from tensors with masterkey.FilterBank.from_tensors({name: kernel, ...})."
        )
    bank = filters if isinstance(filters, FilterBank) else load_master_filters(filters)

    def plan(model: nn.Module) -> InjectionPlan:
        # a callable may align by structure too, so it gets the feature strides as "depth" does
        structural = not isinstance(mapping, str) or mapping in STRUCTURAL_MAPPINGS
        targets = find_depthwise_convs(model, feature_strides=structural)
        chosen = resolve_mapping(bank, targets, mapping)
        result = InjectionPlan(entries=[])
        for target in targets:
            source = chosen[target.name]
            if source is None:
                result.entries.append(InjectionEntry(target.name, None, False, reason=unmapped_reason(bank, target)))
                continue
            kernel, want = bank[source], tuple(target.module.weight.shape)
            got = tuple(kernel.shape)
            if got != want and (mapping == "exact" or kernel_orientation(got[2:]) != kernel_orientation(want[2:])):
                result.mismatched[target.name] = (want, got)
                reason = f"shape {got} in the bank, {want} in the model"
                result.entries.append(InjectionEntry(target.name, source, False, reason=reason))
                continue
            source_in, target_in = bank.spec(source).in_channels, target.spec.in_channels
            if mapping == "exact" and source_in != target_in:  # same weight shape, another channel multiplier
                result.mismatched[target.name] = (want, got)
                reason = (f"{source_in} input channels (multiplier {bank.spec(source).channel_multiplier}) in the "
                          f"bank, {target_in} (multiplier {target.spec.channel_multiplier}) in the model")  # fmt: skip
                result.entries.append(InjectionEntry(target.name, source, False, reason=reason))
                continue
            kernel, transforms = fit_kernel(kernel, out_channels=want[0], kernel_size=want[2:], resize=resize)
            result.entries.append(InjectionEntry(target.name, source, True, transforms=transforms or ["copied"]))
            result.updates.append((target.module.weight, kernel))
        used = {e.source for e in result.entries if e.injected}
        result.unused = [n for n in bank.names if n not in used]
        return result

    def refuse(model: nn.Module, planned: InjectionPlan) -> IncompatibleBankError:
        missing = [e.target for e in planned.entries if e.source is None]
        why = {e.target: e.reason for e in planned.entries if e.source is None}
        mismatched = planned.mismatched
        differ = {e.target: e.reason for e in planned.entries if e.target in mismatched}
        hint = " mapping='depth' to fit a bank from another architecture," if mapping == "exact" else ""
        return IncompatibleBankError(
            f"The bank from {bank.config.get('source_model') or 'an unknown model'} does not fit "
            f"{_timm.model_name(model) or type(model).__name__}: {len(missing)} depthwise convs have no bank entry "
            f"(e.g. {dict(list(why.items())[:3])}), {len(mismatched)} differ in shape or channel multiplier "
            f"(e.g. {dict(list(differ.items())[:3])}). Pass strict=False to inject only what fits,{hint} "
            "or use a bank extracted from this architecture.",
            missing=missing,
            mismatched=mismatched,
            unexpected=planned.unused,
        )

    return inject(
        model,
        plan=plan,
        source=repr(bank),
        mapping=mapping if isinstance(mapping, str) else getattr(mapping, "__name__", "callable"),
        strict=strict,
        freeze=freeze,
        trainable=trainable,
        reparameterize=reparameterize,
        refuse=refuse,
        model_kwargs=model_kwargs,
    )


def __getattr__(name: str) -> Any:
    # Deprecated aliases: the layer-split's pointwise control moved to the research wing. The core never imports the
    # wing at import time; only an old caller's attribute access reaches it, with a warning.
    if name in ("inject_pointwise", "pointwise_convs"):
        warnings.warn(f"masterkey.inject.{name} moved to masterkey.research.controls.{name}; import it from there.",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return getattr(importlib.import_module("masterkey.research.controls"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
