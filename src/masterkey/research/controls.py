"""Experiment controls that inject something other than a filter bank (the research wing).

:func:`inject_pointwise` is the layer-split experiment's control arm: the same transfer as a frozen depthwise bank, with
the first pointwise (1x1) convs of a trained network instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import ArgumentError
from ..extract import find_depthwise_convs
from ..inject import InjectionEntry, InjectionPlan, check_trainable, inject

__all__ = ["inject_pointwise", "pointwise_convs"]


def pointwise_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The pointwise (1x1, ungrouped) convs of ``model`` in registration (forward) order.

    Example:
        >>> import timm
        >>> pointwise_convs(timm.create_model("mobilenetv2_100"))[0][0]
        'blocks.0.0.conv_pw'
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
    ]


def inject_pointwise(
    model: nn.Module | str,
    weights: str | Path | Mapping[str, torch.Tensor],
    *,
    first_depthwise: int,
    strict: bool = True,
    freeze: bool = True,
    trainable: str = "all-but-depthwise",
    source: str | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Copy (and freeze) the first pointwise convs of a trained network of the same architecture into ``model``: those
    in the same first share of the network as its first ``first_depthwise`` depthwise convs (the first
    ``round(first_depthwise / N_depthwise * N_pointwise)``). The control arm of the layer-split experiment: the same
    transfer with the pointwise layers instead of the depthwise ones.

    Args:
        weights: the trained network's ``model.safetensors`` (or its state dict).
        first_depthwise: how many depthwise layers the share covers (``n`` of AnB / BnB).
        source: how the report names the weights (default: the path).

    Example:
        >>> model = inject_pointwise("tf_efficientnet_lite0", "runs/A/model.safetensors", first_depthwise=4,
        ...                          num_classes=5)
    """
    check_trainable(trainable)
    if isinstance(first_depthwise, bool) or not isinstance(first_depthwise, int) or first_depthwise < 0:
        raise ArgumentError(f"first_depthwise must be a non-negative integer, got {first_depthwise!r}.")
    if isinstance(weights, Mapping):
        state, label = dict(weights), source or "a state dict"
    else:
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise ArgumentError(f"Cannot read the pointwise weights {str(weights)!r}: {e}. Pass a model.safetensors "
                                "written by a training run.") from None  # fmt: skip
        label = source or f"pointwise convs of {Path(weights).parent}"

    def plan(model: nn.Module) -> InjectionPlan:
        pointwise = pointwise_convs(model)
        count = round(first_depthwise / len(find_depthwise_convs(model)) * len(pointwise))
        result = InjectionPlan(entries=[])
        for name, module in pointwise[:count]:
            params = dict(module.named_parameters(recurse=False))
            keys = {p: f"{name}.{p}" for p in params}
            absent = [k for k in keys.values() if k not in state]
            wrong = [k for p, k in keys.items() if k in state and tuple(state[k].shape) != tuple(params[p].shape)]
            if absent or wrong:
                reason = f"not in the weights: {absent}" if absent else f"shapes differ: {wrong}"
                result.entries.append(InjectionEntry(name, name, False, reason=reason))
                continue
            result.updates += [(params[p], state[k]) for p, k in keys.items()]
            result.entries.append(InjectionEntry(name, name, True, transforms=["pointwise copied"]))
        return result

    return inject(
        model,
        plan=plan,
        source=label,
        mapping="pointwise",
        strict=strict,
        freeze=freeze,
        trainable=trainable,
        model_kwargs=model_kwargs,
    )
