"""Injecting the 8 universal master key filters into a model: plain kernels, or frozen keys under a learnable
per-channel affine map (:class:`KeyAffine`) that :func:`export_universal` folds back into a plain timm model.

Runs through the injection skeleton of :mod:`masterkey.inject` (arguments checked first, then plan, copy, freeze,
report). Non-square or even-sized depthwise convs are left untouched and reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .bank import FilterBank, KernelSpec
from .errors import ArgumentError, FitError
from .extract import find_depthwise_convs
from .fitting import LayerFit, UniversalFit, fit_universal
from .hub import load_master_filters
from .inject import InjectionEntry, InjectionPlan, check_trainable, inject
from .keys import LEARNED_SIZE, NUM_KEYS, keys_for
from .mapping import resolve_mapping, select_channels

__all__ = ["KeyAffine", "inject_universal", "export_universal"]


class KeyAffine(nn.Module):
    """Parametrization of a depthwise conv's weight as ``scale * key + shift`` per output channel.

    Registered with ``torch.nn.utils.parametrize`` on the conv's ``weight``: the original tensor (frozen) holds each
    channel's unit key, so the kernel the conv computes with stays exactly a key up to this affine map, whatever
    ``scale`` and ``shift`` learn. :func:`export_universal` folds the map back into a plain weight.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, *, learn_scale: bool = True):
        super().__init__()
        self.scale = nn.Parameter(scale.reshape(-1, 1, 1, 1).clone(), requires_grad=learn_scale)
        self.shift = nn.Parameter(shift.reshape(-1, 1, 1, 1).clone())

    def forward(self, key: torch.Tensor) -> torch.Tensor:
        return self.scale * key + self.shift


def _nearest_layer(fit: UniversalFit, spec: KernelSpec) -> LayerFit:
    """The source layer of a target conv: the same module with as many channels when there is one, else the layer
    at the nearest relative depth (the first one on ties)."""
    for layer in fit.layers:
        if layer.name == spec.name and layer.num_filters == spec.out_channels:
            return layer
    return min(fit.layers, key=lambda layer: abs(layer.relative_depth - spec.relative_depth))


def inject_universal(
    model: nn.Module | str,
    *,
    source: FilterBank | UniversalFit | str | Path | None = None,
    keys: str = "learned",
    learn_affine: bool | str = False,
    freeze: bool = True,
    trainable: str = "all-but-depthwise",
    reparameterize: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """Initialize every square depthwise conv of ``model`` from the 8 universal keys and freeze them.

    Each output channel ``c`` receives ``a[c] * keys[k[c]] + b[c]`` with the keys rendered at the conv's size (see
    :func:`masterkey.keys.keys_for` for ``keys``):

    - with a ``source`` bank (or its :class:`UniversalFit`), ``k``, ``a`` and ``b`` are those of the source's fit:
      a target conv takes the source layer the bank's structural mapping gives it (``mapping="depth"``: the same
      kernel size first, then the nearest feature-map scale, then the nearest position at that scale; two copies of
      one architecture map one to one whatever their module names), or, for a ready :class:`UniversalFit`, the layer
      of the same name and channel count, else the one at the nearest relative depth; its channels are spread evenly
      over the target's (``source channel = c * C_source // C_target``). ``a`` carries over unchanged across kernel sizes: all keys have
      L2 norm 1, so the kernel keeps its source's contrast;
    - without a source, a deterministic rule: channel ``c`` takes key ``c mod 8`` with ``a = 1`` and ``b = 0``, so
      every layer uses all 8 keys equally, each kernel at unit norm.

    Non-square (InceptionNeXt's bands) or even-sized depthwise convs are left untouched and reported.

    Args:
        model: an ``nn.Module`` (changed in place and returned) or a timm model name (created with
            ``model_kwargs``).
        source: a :class:`FilterBank`, Hub repo id or local folder, or a ready :class:`UniversalFit`.
        keys: ``"learned"`` or ``"idealized"``.
        learn_affine: ``False`` writes plain kernels. ``True`` keeps each kernel a frozen key and learns a
            per-channel ``scale`` and ``shift`` (a :class:`KeyAffine` parametrization); ``"shift"`` learns only the
            shift, as the paper does. Asked for explicitly, the affine parameters train under every ``trainable``
            policy.
        freeze: freeze the injected kernels (with ``learn_affine``, the keys under the affine map).
        trainable: what else trains, one of :data:`masterkey.inject.TRAINABLE_POLICIES`.
        reparameterize: fuse multi-branch blocks first (FastViT, RepViT, MobileOne).

    Returns:
        The model, with ``model.masterkey_report`` (an :class:`~masterkey.inject.InjectionReport`).

    Example:
        >>> import masterkey
        >>> model = masterkey.inject_universal("convnext_atto", learn_affine="shift", num_classes=10)
        >>> plain = masterkey.export_universal(model)  # a plain timm model again, same outputs
    """
    check_trainable(trainable)
    if learn_affine not in (False, True, "shift"):
        raise ArgumentError(f"learn_affine={learn_affine!r}: choose False, True (scale and shift) or 'shift'.")
    keys_for(keys, LEARNED_SIZE)  # checks the key set name before anything is loaded or fitted
    fit, source_label, bank = _resolve_source(source)
    affines: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # (a, b) of each injected conv, for KeyAffine

    def plan(model: nn.Module) -> InjectionPlan:
        result = InjectionPlan(entries=[])
        used = set()
        targets = find_depthwise_convs(model, feature_strides=bank is not None)
        # a bank's source layers by structure, as from_pretrained_filters(mapping="depth") maps its kernels
        by_structure = resolve_mapping(bank, targets, "depth") if bank is not None else {}
        layers = {layer.name: layer for layer in fit.layers} if fit is not None else {}
        for target in targets:
            spec = target.spec
            h, w = spec.kernel_size
            if h != w or h % 2 == 0:
                reason = f"{h}x{w} kernel: the keys are square, odd"
                result.entries.append(InjectionEntry(target.name, None, False, reason=reason))
                continue
            key_set, label = keys_for(keys, h)
            transforms = [f"keys {label}"]
            if fit is None:
                key = torch.arange(spec.out_channels) % NUM_KEYS
                a, b = torch.ones(spec.out_channels), torch.zeros(spec.out_channels)
                source_name = None
                transforms.append("key = channel mod 8, a = 1, b = 0")
            else:
                layer = layers.get(by_structure.get(target.name) or "") or _nearest_layer(fit, spec)
                channels = select_channels(layer.num_filters, spec.out_channels)
                key, a, b = layer.key[channels], layer.a[channels], layer.b[channels]
                key, a = key.clamp(min=0), torch.where(key < 0, 0.0, a)  # a constant source filter is b alone
                source_name = layer.name
                used.add(layer.name)
                transforms.append(f"fit of {layer.name} ({layer.key_set})")
                if layer.num_filters != spec.out_channels:
                    transforms.append(f"channels {layer.num_filters}->{spec.out_channels} evenly spaced")
            if learn_affine:
                transforms.append("learnable shift" if learn_affine == "shift" else "learnable scale and shift")
            result.entries.append(InjectionEntry(target.name, source_name, True, transforms=transforms))
            unit = key_set[key][:, None]
            kernel = unit if learn_affine else a[:, None, None, None] * unit + b[:, None, None, None]
            result.updates.append((target.module.weight, kernel))
            affines[target.name] = (a, b)
        result.unused = [] if fit is None else [layer.name for layer in fit.layers if layer.name not in used]
        return result

    def finish(model: nn.Module, planned: InjectionPlan) -> None:
        # the weights were frozen as plain parameters: they become the parametrizations' frozen originals
        if not learn_affine:
            return
        modules = dict(model.named_modules())
        for entry in planned.entries:
            if entry.injected:
                module = modules[entry.target]
                a, b = affines[entry.target]
                weight = module.weight
                affine = KeyAffine(a, b, learn_scale=learn_affine is True).to(dtype=weight.dtype, device=weight.device)
                parametrize.register_parametrization(module, "weight", affine)

    return inject(
        model,
        plan=plan,
        source=f"the 8 universal keys ({keys}), {source_label}",
        mapping="key = channel mod 8" if fit is None else "fit of the source, by structure (depth)" if bank is not None
        else "fit of the source, nearest relative depth",
        strict=False,
        freeze=freeze,
        trainable=trainable,
        reparameterize=reparameterize,
        finish=finish,
        model_kwargs=model_kwargs,
    )


def _resolve_source(
    source: FilterBank | UniversalFit | str | Path | None,
) -> tuple[UniversalFit | None, str, FilterBank | None]:
    """The source's fit, how the report names it, and the bank it was fitted to (``None`` for a ready fit)."""
    if source is None:
        return None, "no source", None
    if isinstance(source, UniversalFit):
        if source.num_keys != NUM_KEYS:
            raise FitError(
                f"The source fit uses {source.num_keys} custom keys; universal injection needs a fit to the 8 "
                "universal keys (keys='learned' or 'idealized')."
            )
        return source, f"assignment from a fit of {source.num_filters} filters", None
    if not isinstance(source, FilterBank):
        source = load_master_filters(source)
    # the learned keys where the source is 7x7: they describe trained filters best
    return fit_universal(source, keys="learned"), f"assignment fitted to {source!r}", source


def export_universal(model: nn.Module) -> nn.Module:
    """Fold every :class:`KeyAffine` back into its conv's plain ``weight`` (``scale * key + shift``), in place.

    The result is a plain timm model again (``state_dict`` keys as timm names them, loadable with
    ``timm.create_model``), computing the same outputs; the folded weights keep their ``requires_grad``.

    Example:
        >>> model = masterkey.export_universal(model)
        >>> torch.save(model.state_dict(), "model.pt")
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, KeyAffine) for p in module.parametrizations["weight"]
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
