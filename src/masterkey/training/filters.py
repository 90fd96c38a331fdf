"""What ``--filters`` names: the single place where a filter spec becomes filters injected into the model.

A spec is ``none`` (train from scratch), one of :data:`NAMED_FILTERS`, ``universal-<bank>`` (the 8 learned keys
fitted to any bank, e.g. ``universal-imagenet-lite0``), or anything :func:`masterkey.load_master_filters` accepts (a
Hub repo id, a local folder, a built-in bank name). A named entry is
a function of the target model returning :class:`ResolvedFilters`, so filters that adapt to the model (rendered at
its kernel sizes, fitted per channel) fit here too, with their own ``inject`` function: adding one is one line in
:data:`NAMED_FILTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..bank import FilterBank

__all__ = ["ResolvedFilters", "NAMED_FILTERS", "resolve_filters", "is_scratch"]


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
        from ..inject import from_pretrained_filters

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
        from ..hub import load_master_filters

        return ResolvedFilters(name, load_master_filters(name))

    return resolve


def _random(model: nn.Module) -> ResolvedFilters:
    """The model's own random initial depthwise kernels, frozen: the control for any transferred bank."""
    from ..extract import extract_filters

    return ResolvedFilters("random", extract_filters(model, description="random initialization of the target"))


def _universal(keys: str, *, source: str | None = None) -> Callable[[nn.Module], ResolvedFilters]:
    """The 8 universal keys through :func:`masterkey.inject_universal`: each channel's key, ``a`` and ``b`` from
    fitting the ``source`` bank, or without a source key = channel mod 8 (a = 1, b = 0)."""
    spec = f"universal-{source or keys}"

    def resolve(model: nn.Module) -> ResolvedFilters:
        from ..hub import load_master_filters
        from ..universal import inject_universal, universal_bank

        bank = load_master_filters(source) if source else universal_bank(keys)

        def inject(model: nn.Module, *, strict: bool, freeze: bool, trainable: str, mapping: str) -> nn.Module:
            return inject_universal(model, source=bank if source else None, keys=keys, freeze=freeze,
                                    trainable=trainable)  # fmt: skip

        return ResolvedFilters(spec, bank, inject=inject)

    return resolve


#: Named filters: ``name -> (target model) -> ResolvedFilters``. Filters with their own injection (the universal
#: keys, for example) pass ``inject=``.
NAMED_FILTERS: dict[str, Callable[[nn.Module], ResolvedFilters]] = {
    "imagenet-lite0": _builtin("imagenet-lite0"),
    "random": _random,
    "universal-learned": _universal("learned"),
    "universal-idealized": _universal("idealized"),
}
FITTED_PREFIX = "universal-"  # ``universal-<bank>``: the learned keys fitted to that bank


def is_scratch(spec: str | None) -> bool:
    """``--filters none``: no bank, the from-scratch baseline."""
    return spec is None or spec.strip().lower() in ("none", "scratch", "")


def resolve_filters(spec: str | None, model: nn.Module) -> ResolvedFilters | None:
    """The filters ``spec`` names for ``model``, or ``None`` for ``none``.

    Raises:
        BankNotFoundError, BankFormatError, InvalidFiltersError: as :func:`masterkey.load_master_filters`.
    """
    if is_scratch(spec):
        return None
    if spec in NAMED_FILTERS:
        return NAMED_FILTERS[spec](model)
    from ..errors import BankNotFoundError
    from ..hub import load_master_filters

    try:
        if spec.startswith(FITTED_PREFIX) and not Path(spec).exists():  # a local folder of that name is a bank
            return _universal("learned", source=spec[len(FITTED_PREFIX) :])(model)
        return ResolvedFilters(spec, load_master_filters(spec))
    except BankNotFoundError as e:
        raise BankNotFoundError(f"{e} Named filters: {', '.join(NAMED_FILTERS)}; "
                                f"'{FITTED_PREFIX}<bank>' fits the 8 keys to a bank; 'none' trains from scratch.")  from None
