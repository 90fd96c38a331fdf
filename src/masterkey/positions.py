"""Where each depthwise conv of a model sits: its stage and relative depth (from module paths, :func:`layer_positions`)
and its feature-map scale and position within that scale (from recorded feature strides, :func:`scale_positions`,
what ``mapping="depth"`` aligns architectures by).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .manifest import KernelSpec

__all__ = ["layer_positions", "relative_depths", "scale_positions", "stage_index", "stage_path"]


def _layer(name: str) -> str:
    # the splits of a MixedConv2d are children 0, 1, ... of one module: one layer
    head, _, last = name.rpartition(".")
    return head if head and last.isdigit() else name


def stage_path(name: str) -> str:
    """The stage a module path belongs to: the path up to its first integer (``stages.2.blocks.0.conv_dw`` ->
    ``stages.2``), or ``""`` when it has none.

    Example:
        >>> stage_path("stages.2.blocks.0.conv_dw")
        'stages.2'
    """
    parts = name.split(".")
    # isdecimal, not isdigit: "²" is a digit that int() cannot read
    digits = [i for i, part in enumerate(parts) if part.isdecimal()]
    return ".".join(parts[: digits[0] + 1]) if digits else ""


def stage_index(name: str) -> int | None:
    """The stage number of a module path: its first integer (``stages.2.blocks.0.conv_dw`` -> 2), or ``None``.

    Example:
        >>> stage_index("stages.2.blocks.0.conv_dw")
        2
    """
    path = stage_path(name)
    return int(path.rpartition(".")[2]) if path else None


def _spread(keys: list[str]) -> list[float]:
    # position of each key among equal keys, evenly spread in (0, 1): 3 keys sit at 1/6, 1/2, 5/6
    size, seen, spread = Counter(keys), Counter(), []
    for key in keys:
        spread.append((seen[key] + 0.5) / size[key])
        seen[key] += 1
    return spread


def layer_positions(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``(relative depth, position among its layer's splits)`` of each depthwise conv, both in ``(0, 1)``, from the
    module paths in forward order. This is masterkey's one definition of **relative depth**: depth is counted in
    stages (:func:`stage_path`): stage ``k`` of ``S`` covers ``[k/S, (k+1)/S)`` and its layers spread evenly inside
    it, so the last stage of a ConvNeXt meets the last stage of an EfficientNet whatever their lengths. Convs whose
    paths differ only in a final index (the splits of a ``MixedConv2d``) form one layer and share its depth.

    Example:
        >>> layer_positions(["stages.0.conv", "stages.1.a.conv", "stages.1.b.conv"])["stages.1.b.conv"]
        (0.875, 0.5)
    """
    layers = list(dict.fromkeys(_layer(n) for n in names))  # forward order
    # position of each stage by lookup, not list.index: linear in the number of layers, whatever a manifest holds
    stages = {stage: i for i, stage in enumerate(dict.fromkeys(stage_path(layer) for layer in layers))}
    depth = {
        layer: (stages[stage_path(layer)] + within) / len(stages)
        for layer, within in zip(layers, _spread([stage_path(layer) for layer in layers]))
    }
    return {n: (depth[_layer(n)], split) for n, split in zip(names, _spread([_layer(n) for n in names]))}


def scale_positions(specs: Sequence[KernelSpec]) -> dict[str, tuple[int, float, float]] | None:
    """``(feature stride, position among the layers of that scale, position among its layer's splits)`` of each
    spec, or ``None`` when any spec lacks its ``feature_stride``. This is the structure the ``"depth"`` mapping aligns
    two architectures by, whatever their module names: the scale of the feature map a filter reads, then where its
    layer sits among the layers reading that scale (in forward order, spread evenly in ``(0, 1)``), so two copies of
    one architecture line up one to one. Splits of one ``MixedConv2d`` form one layer, as in :func:`layer_positions`.

    Example:
        >>> specs = [KernelSpec(n, in_channels=8, out_channels=8, kernel_size=(3, 3), feature_stride=s)
        ...          for n, s in [("features.1.conv", 2), ("features.2.conv", 2), ("features.3.conv", 4)]]
        >>> scale_positions(specs)["features.2.conv"]
        (2, 0.75, 0.5)
    """
    if any(spec.feature_stride is None for spec in specs):
        return None
    names = [spec.name for spec in specs]
    stride_of = {_layer(spec.name): spec.feature_stride for spec in specs}
    layers = list(dict.fromkeys(_layer(n) for n in names))  # forward order
    # layers are grouped by the scale they read; a key per scale makes _spread place them within it
    within = dict(zip(layers, _spread([str(stride_of[layer]) for layer in layers])))
    return {
        n: (stride_of[_layer(n)], within[_layer(n)], split)
        for n, split in zip(names, _spread([_layer(n) for n in names]))
    }


def relative_depths(names: Sequence[str]) -> list[float]:
    """The relative depth (:func:`layer_positions`) of each of ``names``, in order.

    Example:
        >>> relative_depths(["stages.0.conv", "stages.1.conv"])
        [0.25, 0.75]
    """
    positions = layer_positions(names)
    return [positions[n][0] for n in names]
