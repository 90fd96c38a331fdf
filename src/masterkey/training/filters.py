"""What ``--filters`` names: the single place where a filter spec becomes filters injected into the model.

A spec is ``none`` (train from scratch), one of :data:`NAMED_FILTERS`, ``universal-<bank>`` (the 8 learned keys
fitted to any bank, e.g. ``universal-imagenet-lite0``), or anything :func:`masterkey.load_master_filters` accepts (a
Hub repo id, a local folder, a built-in bank name). A named entry is
a function of the target model returning :class:`ResolvedFilters`, so filters that adapt to the model (rendered at
its kernel sizes, fitted per channel) fit here too, with their own ``inject`` function: adding one is one line in
:data:`NAMED_FILTERS`, or, for one run only, an entry of ``train_transfer(..., extra_filters={name: resolver})``
(nothing shared is changed while a run goes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..bank import FilterBank
from ..errors import BankNotFoundError
from ..extract import extract_filters
from ..hub import load_master_filters
from ..inject import from_pretrained_filters
from ..keys import universal_bank
from ..universal_injection import inject_universal
from .config import is_scratch

__all__ = ["ResolvedFilters", "FilterResolver", "NAMED_FILTERS", "resolve_filters", "is_scratch"]

logger = logging.getLogger(__name__)

#: What a named filter is: a function of the target model returning the filters to inject into it.
FilterResolver = Callable[[nn.Module], "ResolvedFilters"]


@dataclass
class ResolvedFilters:
    """Filters ready to inject: the spec they came from, the bank (its config says where the filters come from),
    and how to inject them. ``inject`` takes ``(model, *, strict, freeze, trainable, mapping)`` and returns the model
    with ``model.masterkey_report``; ``None`` means :func:`masterkey.from_pretrained_filters` with ``bank``."""

    spec: str
    bank: FilterBank
    inject: Callable[..., nn.Module] | None = None

    def apply(self, model: nn.Module, *, strict: bool, freeze: bool, trainable: str, mapping: str) -> nn.Module:
        if self.inject is not None:
            return self.inject(model, strict=strict, freeze=freeze, trainable=trainable, mapping=mapping)
        return from_pretrained_filters(
            model, self.bank, strict=strict, freeze=freeze, trainable=trainable, mapping=mapping
        )

    def provenance(self) -> dict[str, Any]:
        """Where the filters came from, as recorded in the bank's config."""
        cfg = self.bank.config
        keys = ("source_model", "source_weights", "source_dataset", "source_license", "description")
        return {"filters": self.spec, "bank": repr(self.bank), **{k: cfg[k] for k in keys if cfg.get(k)}}


def _builtin(name: str) -> Callable[[nn.Module], ResolvedFilters]:
    def resolve(model: nn.Module) -> ResolvedFilters:
        return ResolvedFilters(name, load_master_filters(name))

    return resolve


def _random(model: nn.Module) -> ResolvedFilters:
    """The model's own random initial depthwise kernels, frozen: the control for any transferred bank."""
    return ResolvedFilters("random", extract_filters(model, description="random initialization of the target"))


def _own(model: nn.Module) -> ResolvedFilters:
    """The model's own depthwise kernels as they are, frozen: with pretrained weights (``--pretrained`` or a tagged
    name), the efficient fine-tuning setting, where only the rest trains."""
    return ResolvedFilters("own", extract_filters(model, description="the target model's own depthwise kernels"))


def _universal(keys: str, *, source: str | None = None) -> Callable[[nn.Module], ResolvedFilters]:
    """The 8 universal keys through :func:`masterkey.inject_universal`: each channel's key, ``a`` and ``b`` from
    fitting the ``source`` bank, or without a source key = channel mod 8 (a = 1, b = 0)."""
    spec = f"universal-{source or keys}"

    def resolve(model: nn.Module) -> ResolvedFilters:
        bank = load_master_filters(source) if source else universal_bank(keys)

        def inject(model: nn.Module, *, strict: bool, freeze: bool, trainable: str, mapping: str) -> nn.Module:
            return inject_universal(model, source=bank if source else None, keys=keys, freeze=freeze,
                                    trainable=trainable)  # fmt: skip

        return ResolvedFilters(spec, bank, inject=inject)

    return resolve


#: Named filters: ``name -> (target model) -> ResolvedFilters``. Filters with their own injection (the universal
#: keys, for example) pass ``inject=``.
NAMED_FILTERS: dict[str, FilterResolver] = {
    "imagenet-lite0": _builtin("imagenet-lite0"),
    "random": _random,
    "own": _own,
    "universal-learned": _universal("learned"),
    "universal-idealized": _universal("idealized"),
}
FITTED_PREFIX = "universal-"  # ``universal-<bank>``: the learned keys fitted to that bank


def resolve_filters(
    spec: str | None, model: nn.Module, *, extra_filters: Mapping[str, FilterResolver] | None = None
) -> ResolvedFilters | None:
    """The filters ``spec`` names for ``model``, or ``None`` for ``none``.

    ``extra_filters`` are named filters for this call only, looked up before :data:`NAMED_FILTERS`: a caller with
    filters of its own passes them here instead of adding them to the shared registry.

    Raises:
        BankNotFoundError, BankFormatError, InvalidFiltersError: as :func:`masterkey.load_master_filters`.

    Example:
        >>> resolve_filters("imagenet-lite0", timm.create_model("tf_efficientnet_lite0")).spec
        'imagenet-lite0'
        >>> resolve_filters("mine", model, extra_filters={"mine": lambda m: ResolvedFilters("mine", my_bank)})
    """
    if is_scratch(spec):
        return None
    extra = dict(extra_filters or {})
    if spec in extra:
        return extra[spec](model)
    if spec in NAMED_FILTERS:
        return NAMED_FILTERS[spec](model)
    try:
        if spec.startswith(FITTED_PREFIX) and not Path(spec).exists():  # a local folder of that name is a bank
            return _universal("learned", source=spec[len(FITTED_PREFIX) :])(model)
        return ResolvedFilters(spec, load_master_filters(spec))
    except BankNotFoundError as e:
        named = ", ".join([*NAMED_FILTERS, *(k for k in extra if k not in NAMED_FILTERS)])
        raise BankNotFoundError(f"{e} Named filters: {named}; '{FITTED_PREFIX}<bank>' fits the 8 keys to a bank; "
                                "'none' trains from scratch.") from None
