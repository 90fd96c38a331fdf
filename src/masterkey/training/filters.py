"""What ``--filters`` names: the single place where a filter spec becomes filters injected into the model.

The spec is parsed by :func:`masterkey.names.parse_filters` (the grammar, in one place): ``none`` (train from
scratch), one of :data:`NAMED_FILTERS` (``own``, ``random``, ``universal-learned``, ``universal-idealized``),
``fitted:<bank>`` (the 8 learned keys fitted to any bank, e.g. ``fitted:imagenet-lite0``; the deprecated
``universal-<bank>`` still works), or a bank: anything :func:`masterkey.load_master_filters` accepts (a built-in
name such as ``imagenet-lite0`` or ``universal-learned-8``, a local folder, a Hub repo id). A named entry is
a function of the target model returning :class:`ResolvedFilters`, so filters that adapt to the model (rendered at
its kernel sizes, fitted per channel) fit here too, with their own ``inject`` function: adding one is one line in
:data:`NAMED_FILTERS`, or, for one run only, an entry of ``train_transfer(..., extra_filters={name: resolver})``
(nothing shared is changed while a run goes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..bank import FilterBank
from ..errors import BankNotFoundError, UnknownNameError
from ..extract import extract_filters
from ..hub import BUILTIN_BANKS, load_master_filters
from ..inject import from_pretrained_filters
from ..keys import universal_bank
from ..names import FITTED_PREFIX as _FITTED_PREFIX
from ..names import LEGACY_FITTED_PREFIX, parse_filters
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
        """Where the filters came from, as recorded in the bank's config. ``source_sha256`` (the weights file the bank
        was extracted from) lets a grid tell whether a source network trained again gave the same filters."""
        cfg = self.bank.config
        keys = ("source_model", "source_weights", "source_sha256", "source_dataset", "source_license", "description")
        return {"filters": self.spec, "bank": repr(self.bank), **{k: cfg[k] for k in keys if cfg.get(k)}}


def _random(model: nn.Module) -> ResolvedFilters:
    """The model's own random initial depthwise kernels, frozen: the control for any transferred bank."""
    return ResolvedFilters("random", extract_filters(model, description="random initialization of the target"))


def _own(model: nn.Module) -> ResolvedFilters:
    """The model's own depthwise kernels as they are, frozen: with pretrained weights (``--pretrained`` or a tagged
    name), the efficient fine-tuning setting, where only the rest trains."""
    return ResolvedFilters("own", extract_filters(model, description="the target model's own depthwise kernels"))


def _universal(
    keys: str, *, source: str | None = None, spec: str | None = None
) -> Callable[[nn.Module], ResolvedFilters]:
    """The 8 universal keys through :func:`masterkey.inject_universal`: each channel's key, ``a`` and ``b`` from
    fitting the ``source`` bank, or without a source key = channel mod 8 (a = 1, b = 0). ``spec`` is the spec as
    given (recorded with the run)."""
    spec = spec or f"universal-{source or keys}"

    def resolve(model: nn.Module) -> ResolvedFilters:
        bank = load_master_filters(source) if source else universal_bank(keys)

        def inject(model: nn.Module, *, strict: bool, freeze: bool, trainable: str, mapping: str) -> nn.Module:
            return inject_universal(model, source=bank if source else None, keys=keys, freeze=freeze,
                                    trainable=trainable)  # fmt: skip

        return ResolvedFilters(spec, bank, inject=inject)

    return resolve


#: Named filters: ``name -> (target model) -> ResolvedFilters``. Filters with their own injection (the universal
#: keys, for example) pass ``inject=``. Banks are not named here: every bank, built-in or not, is a filters spec of its
#: own (:func:`masterkey.names.parse_filters`).
NAMED_FILTERS: dict[str, FilterResolver] = {
    "random": _random,
    "own": _own,
    "universal-learned": _universal("learned"),
    "universal-idealized": _universal("idealized"),
}
#: Deprecated: the legacy prefix ``universal-`` (:data:`masterkey.names.LEGACY_FITTED_PREFIX`), kept under this name
#: for code that imported it. New code writes ``masterkey.names.FITTED_PREFIX + bank`` (``fitted:``), as the
#: experiments do; runs and results recorded under the old spelling compare equal through
#: :func:`masterkey.names.canonical_filters` (``--resume`` reads them back, the cards find them).
FITTED_PREFIX = LEGACY_FITTED_PREFIX


def resolve_filters(
    spec: str | None, model: nn.Module, *, extra_filters: Mapping[str, FilterResolver] | None = None
) -> ResolvedFilters | None:
    """The filters ``spec`` names for ``model``, or ``None`` for ``none``.

    ``extra_filters`` are named filters for this call only, looked up before :data:`NAMED_FILTERS`: a caller with
    filters of its own passes them here instead of adding them to the shared registry. Any other spec is parsed by
    :func:`masterkey.names.parse_filters`: ``fitted:<bank>`` or a bank (an exact built-in bank name such as
    ``universal-learned-8`` is always the bank).

    Raises:
        UnknownNameError: a spec of no accepted form (a :class:`BankNotFoundError`), with the closest names.
        BankNotFoundError, BankFormatError, InvalidFiltersError: as :func:`masterkey.load_master_filters`.

    Example:
        >>> resolve_filters("imagenet-lite0", timm.create_model("tf_efficientnet_lite0")).spec
        'imagenet-lite0'
        >>> resolve_filters("universal-learned-8", timm.create_model("convnext_atto")).bank.names
        ['universal_keys']
        >>> resolve_filters("mine", model, extra_filters={"mine": lambda m: ResolvedFilters("mine", my_bank)})
    """
    if is_scratch(spec):
        return None
    extra = dict(extra_filters or {})
    if spec in extra:
        return extra[spec](model)
    if spec in NAMED_FILTERS:
        return NAMED_FILTERS[spec](model)
    named = [*extra, *(k for k in NAMED_FILTERS if k not in extra)]
    parsed = parse_filters(spec, named=named)  # UnknownNameError for no accepted form; warns for universal-<bank>
    if parsed.kind not in ("fitted", "bank") or parsed.bank is None:  # a keyword taken out of NAMED_FILTERS
        raise UnknownNameError(f"The filters {spec!r} are not registered in NAMED_FILTERS; registered: "
                               f"{', '.join(named)}.", name=spec, kind="filters")  # fmt: skip
    try:
        if parsed.kind == "fitted":
            return _universal("learned", source=parsed.bank.name, spec=spec)(model)
        return ResolvedFilters(spec, load_master_filters(parsed.bank.name))
    except BankNotFoundError as e:
        what = f"'{_FITTED_PREFIX}<bank>' fits the 8 keys to a bank (formerly '{LEGACY_FITTED_PREFIX}<bank>')"
        hint = (f"--filters takes none, {', '.join(named)}, a bank (a built-in: {', '.join(BUILTIN_BANKS)}; a "
                f"folder; a Hub id 'org/name'), or {what}: `masterkey list filters` lists them.")  # fmt: skip
        raise _with_hint(e, hint) from None


def _with_hint(error: BankNotFoundError, hint: str) -> BankNotFoundError:
    """``error`` again (same class, same attributes) with ``hint`` added to its message."""
    again = type(error)(f"{error} {hint}")
    again.__dict__.update(error.__dict__)
    return again
