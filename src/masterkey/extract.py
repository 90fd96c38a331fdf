"""Finding the depthwise convolutions of a model and extracting their kernels into a :class:`FilterBank`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.layers import CondConv2d
from torch import nn

from . import _timm
from .bank import FilterBank, KernelSpec, make_config, relative_depths, stage_index
from .errors import UnsupportedModelError

__all__ = ["DepthwiseConv", "find_depthwise_convs", "extract_filters", "is_depthwise"]


@dataclass(frozen=True)
class DepthwiseConv:
    """One depthwise conv of a model: its module path, the module, and its manifest entry."""

    name: str
    module: nn.Conv2d
    spec: KernelSpec


def is_depthwise(module: nn.Module) -> bool:
    """A spatial depthwise conv: an ``nn.Conv2d`` (timm's ``Conv2dSame`` included) with ``groups == in_channels > 1``
    and a kernel larger than 1x1.

    Each split of timm's ``MixedConv2d`` is such a conv, so it becomes its own entry. A channel multiplier
    (``out_channels = k * in_channels``) is allowed. A 1x1 depthwise conv is a per-channel scale, not a spatial
    filter, and is left out.
    """
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels > 1
        and module.out_channels % module.in_channels == 0
        and module.kernel_size != (1, 1)
    )


def find_depthwise_convs(model: nn.Module) -> list[DepthwiseConv]:
    """Every depthwise conv of ``model`` in module registration order (timm registers modules in forward order).

    Raises:
        UnsupportedModelError: the model has no depthwise convs, only ``CondConv2d`` experts, or depthwise convs
            inside reparameterizable blocks that are not fused yet (fuse them with
            ``timm.utils.reparameterize_model(model)``, or pass ``reparameterize=True`` to masterkey's functions).

    Example:
        >>> import timm
        >>> convs = find_depthwise_convs(timm.create_model("mixnet_s"))
        >>> convs[1].name, convs[1].spec.kernel_size
        ('blocks.1.0.conv_dw', (3, 3))
    """
    found = [(name, m) for name, m in model.named_modules() if is_depthwise(m)]
    if not found:
        cond = [n for n, m in model.named_modules() if isinstance(m, CondConv2d) and m.groups == m.in_channels > 1]
        if cond:
            raise UnsupportedModelError(
                f"{type(model).__name__} has depthwise convs only as CondConv2d experts ({len(cond)}, e.g. {cond[0]}), "
                "whose kernels are mixed per input; masterkey supports plain depthwise nn.Conv2d. Use the non-CondConv "
                "variant of the architecture."
            )
        raise UnsupportedModelError(
            f"{type(model).__name__} has no depthwise convolution (nn.Conv2d with groups == in_channels > 1 and a "
            "spatial kernel). masterkey works with depthwise-separable CNNs such as ConvNeXt, EfficientNet, MobileNet."
        )
    inside = _timm.unfused_branches(model, is_depthwise)
    if inside:
        raise UnsupportedModelError(
            f"{len(inside)} depthwise convs sit in reparameterizable multi-branch blocks that are not fused yet "
            f"(e.g. {inside[0]}). Fuse the model first: model = timm.utils.reparameterize_model(model), or pass "
            "reparameterize=True."
        )
    depths = relative_depths([name for name, _ in found])
    return [
        DepthwiseConv(
            name=name,
            module=m,
            spec=KernelSpec(
                name=name,
                in_channels=m.in_channels,
                out_channels=m.out_channels,
                kernel_size=tuple(m.kernel_size),
                stride=tuple(m.stride),
                dilation=tuple(m.dilation),
                index=i,
                relative_depth=depths[i],
                stage=stage_index(name),
            ),
        )
        for i, (name, m) in enumerate(found)
    ]


def prepare_model(
    model: nn.Module | str, *, reparameterize: bool, weights: str | Path | None = None, **model_kwargs: Any
) -> nn.Module:
    """A timm name becomes a fresh model (with ``weights`` loaded when given); unfused reparameterizable blocks are
    fused in place when ``reparameterize`` is true."""
    if isinstance(model, str):
        model = _timm.create_model(model, weights=weights, **model_kwargs)
    elif weights is not None:
        _timm.load_weights(model, weights)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch nn.Module or a timm model name, got {type(model).__name__}.")
    if reparameterize and _timm.unfused_branches(model, is_depthwise):
        model = _timm.reparameterize(model, inplace=True)
    return model


def extract_filters(
    model: nn.Module | str,
    *,
    weights: str | Path | None = None,
    reparameterize: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **source_info: Any,
) -> FilterBank:
    """Extract every depthwise kernel of ``model`` into a :class:`FilterBank`.

    Args:
        model: an ``nn.Module`` (left unchanged) or a timm model name.
        weights: local checkpoint to load first (safetensors or a torch file, read with ``weights_only=True``).
        reparameterize: fuse multi-branch blocks (FastViT, RepViT, MobileOne) on a copy before extracting, so each
            depthwise conv contributes the kernel it computes with. With ``False`` such models are refused.
        model_kwargs: passed to ``timm.create_model`` when ``model`` is a name.
        source_info: written to the bank's ``config.json``: ``source_model`` (defaults to the timm architecture),
            ``source_weights``, ``source_dataset``, ``source_license``, ``description``, or any other key.

    Example:
        >>> import masterkey
        >>> bank = masterkey.extract_filters("tf_efficientnet_lite0", weights="lite0.pth", source_dataset="imagenet-1k")
        >>> bank.save_pretrained("tf_efficientnet_lite0-imagenet-dw")
    """
    if isinstance(model, nn.Module) and reparameterize and _timm.unfused_branches(model, is_depthwise):
        model = _timm.reparameterize(model, inplace=False)  # never change the caller's model
    model = prepare_model(model, reparameterize=reparameterize, weights=weights, **(model_kwargs or {}))
    convs = find_depthwise_convs(model)
    source_info.setdefault("source_model", _timm.model_name(model) or type(model).__name__)
    filters = {conv.name: conv.module.weight.detach().to(torch.float32).clone() for conv in convs}
    return FilterBank(filters, make_config([conv.spec for conv in convs], **source_info))
