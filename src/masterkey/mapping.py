"""Cross-architecture mapping: which bank entry each target depthwise conv takes, and how its kernel is fitted.

Three rules, each deterministic (the same bank and model always give the same injection):

- **Layers** (``mapping="depth"``, :func:`match_by_depth`): architectures are aligned by what a spatial filter
  sees, not by module names. Each conv is placed by the scale of the feature map it reads (its ``feature_stride``,
  input pixels per feature-map pixel, measured with one forward pass: :func:`masterkey.extract.measure_feature_strides`)
  and by its layer's position among the layers reading that scale (:func:`masterkey.bank.scale_positions`). A target
  takes a bank entry of its own kernel size where the bank has one, then the nearest scale, then the nearest
  position, so two copies of one architecture map one to one whatever their libraries call the modules, and
  kernels are resized only where the bank has none of the target's size. Kernels only map onto kernels of the same
  orientation: square onto square, horizontal bands (``1x11``) onto horizontal bands, vertical onto vertical. A
  band with no band in the bank is left untouched, and the report says so. ``"stage"`` and ``"size"`` are the
  earlier name-based rules (relative depth counted in module-path stages, :func:`masterkey.bank.layer_positions`),
  kept so earlier results reproduce.
- **Channels** (:func:`select_channels`): target channel ``i`` of ``m`` takes source filter ``floor(i * n / m)`` of
  ``n``: evenly spaced when the target is narrower, each filter repeated in order when it is wider. Channels are
  output channels, so a channel multiplier (``out = k * in``) is covered by the same rule.
- **Kernel size** (:func:`resize_kernel`): centre-crop or zero-pad when the size difference is even on both axes,
  bilinear resampling otherwise; then each filter's sum (its response to a constant image, the DC gain) is restored
  exactly, and its L2 norm too whenever a filter of the new size can have both (a cropped box blur cannot: it
  becomes the flattest filter with that sum). Zero-padding changes nothing but the size. With
  ``resize="universal"`` an odd square filter is instead re-rendered at the new size from the universal master key
  it fits best (:func:`masterkey.fit_universal`, keys drawn at the new size by :func:`masterkey.keys.idealized_keys`),
  with the same sum and norm restored; other sizes fall back to the geometric rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from .bank import FilterBank, KernelSpec, layer_positions, scale_positions
from .errors import ArgumentError, MappingError
from .extract import DepthwiseConv
from .fitting import fit_universal
from .keys import idealized_keys

_logger = logging.getLogger(__name__)

__all__ = [
    "MAPPINGS",
    "RESIZE_METHODS",
    "check_resize",
    "MappingFn",
    "match_exact",
    "match_by_depth",
    "match_by_stage",
    "match_by_size_then_stage",
    "STRUCTURAL_MAPPINGS",
    "resolve_mapping",
    "select_channels",
    "resize_kernel",
    "fit_kernel",
    "kernel_orientation",
    "unmapped_reason",
]

#: ``mapping`` callables take the bank and the target convs and return ``{target name: bank entry name or None}``.
MappingFn = Callable[[FilterBank, list[DepthwiseConv]], Mapping[str, "str | None"]]


def match_exact(bank: FilterBank, targets: list[DepthwiseConv]) -> dict[str, str | None]:
    """The ``"exact"`` mapping: each target conv takes the bank entry with the same module path.

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.extract_filters("convnext_atto", pretrained=False)
        >>> targets = masterkey.find_depthwise_convs(timm.create_model("convnext_atto"))
        >>> match_exact(bank, targets)["stages.0.blocks.0.conv_dw"]
        'stages.0.blocks.0.conv_dw'
    """
    return {t.name: t.name if t.name in bank else None for t in targets}


def kernel_orientation(kernel_size: tuple[int, int]) -> str:
    """``"square"``, ``"horizontal"`` (``1x11``) or ``"vertical"`` (``11x1``): kernels only map onto their own kind.

    Example:
        >>> kernel_orientation((3, 3)), kernel_orientation((1, 11))
        ('square', 'horizontal')
    """
    h, w = kernel_size
    return "square" if h == w else "horizontal" if h < w else "vertical"


def match_by_depth(bank: FilterBank, targets: list[DepthwiseConv]) -> dict[str, str | None]:
    """The ``"depth"`` mapping: architectures aligned by structure, not by module names.

    Each target conv takes, among the bank entries of its kernel orientation: an entry of its own kernel size when
    the bank has one (at any scale; kernels are resized only where no entry has the target's size), then the entry
    reading the nearest feature-map scale (``feature_stride``, compared on a log scale), then the nearest position
    among the layers of that scale (:func:`masterkey.bank.scale_positions`), then the closest kernel size, the same
    split of a ``MixedConv2d`` and the earlier entry. Two copies of one architecture map one to one whatever their
    module names (torchvision's ``features.2.conv.1.0`` onto timm's ``blocks.1.0.conv_dw``).

    Banks written before feature strides were recorded (no ``feature_stride`` in their manifest) are mapped by the
    name-based ``"stage"`` rule instead, with a warning; extract them again to align them by structure.

    Example:
        >>> import masterkey, timm, torchvision
        >>> bank = masterkey.extract_filters(torchvision.models.mobilenet_v2())
        >>> targets = masterkey.find_depthwise_convs(timm.create_model("mobilenetv2_100"), feature_strides=True)
        >>> match_by_depth(bank, targets)["blocks.1.0.conv_dw"]
        'features.2.conv.1.0'
    """
    source_positions = scale_positions(bank.specs)
    if source_positions is None:
        if len(bank) > 1:  # one entry goes everywhere whatever the rule: nothing to align
            _logger.warning(
                "The bank records no feature strides (saved before masterkey recorded them, or not extracted from a "
                "model): mapping it by module-path stages instead. Extract it again to align it by structure."
            )
        return match_by_stage(bank, targets)
    if any(t.spec.feature_stride is None for t in targets):
        raise MappingError(
            "The target convs carry no feature strides; find them with find_depthwise_convs(model, "
            "feature_strides=True) for the 'depth' mapping."
        )
    target_positions = scale_positions([t.spec for t in targets])

    def distance(target: DepthwiseConv, spec: KernelSpec) -> tuple:
        (stride, position, split), size = target_positions[target.name], target.spec.kernel_size
        source_stride, source_position, source_split = source_positions[spec.name]
        size_gap = abs(spec.kernel_size[0] - size[0]) + abs(spec.kernel_size[1] - size[1])
        # rounding keeps float noise from breaking ties between layers equally far away
        scale_gap = abs(math.log2(source_stride) - math.log2(stride))
        return (size_gap > 0, round(scale_gap, 9), round(abs(source_position - position), 9), size_gap,
                round(abs(source_split - split), 9), spec.index)  # fmt: skip

    return _nearest_entries(bank, targets, distance)


def _nearest_entries(
    bank: FilterBank, targets: list[DepthwiseConv], distance: Callable[[DepthwiseConv, KernelSpec], tuple]
) -> dict[str, str | None]:
    """Each target's nearest bank entry of its kernel orientation by ``distance`` (``None`` where the bank has none
    of that orientation): what every rule shares, each with its own idea of near."""
    plan: dict[str, str | None] = {}
    for target in targets:
        kind = kernel_orientation(target.spec.kernel_size)
        candidates = [s for s in bank.specs if kernel_orientation(s.kernel_size) == kind]
        plan[target.name] = min(candidates, key=lambda spec: distance(target, spec)).name if candidates else None
    return plan


def match_by_stage(
    bank: FilterBank, targets: list[DepthwiseConv], *, same_size_first: bool = False
) -> dict[str, str | None]:
    """The ``"stage"`` mapping, masterkey's first cross-architecture rule (kept so earlier results reproduce): each
    target conv takes the bank entry of the same kernel orientation at the nearest relative depth counted in
    module-path stages (:func:`masterkey.bank.layer_positions`), then among a layer's splits (``MixedConv2d``) the
    closest kernel size and the same relative position, then the earlier entry. It aligns two models only when
    their module paths have the same stages: torchvision's flat ``features.N`` is one stage where timm has seven.
    With ``same_size_first`` (the ``"size"`` mapping) a bank entry of the target's own kernel size is preferred at
    any depth.

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.extract_filters("convnext_atto", pretrained=False)
        >>> targets = masterkey.find_depthwise_convs(timm.create_model("mobilenetv3_small_050"))
        >>> match_by_stage(bank, targets)["blocks.4.2.conv_dw"]
        'stages.3.blocks.1.conv_dw'
    """
    source_positions = layer_positions(bank.names)
    target_positions = layer_positions([t.name for t in targets])

    def distance(target: DepthwiseConv, spec: KernelSpec) -> tuple:
        (depth, split), size = target_positions[target.name], target.spec.kernel_size
        source_depth, source_split = source_positions[spec.name]
        gap = round(abs(source_depth - depth), 9)
        size_gap = abs(spec.kernel_size[0] - size[0]) + abs(spec.kernel_size[1] - size[1])
        rank = (gap, size_gap) if not same_size_first else (size_gap > 0, gap, size_gap)
        return (*rank, round(abs(source_split - split), 9), spec.index)

    return _nearest_entries(bank, targets, distance)


def match_by_size_then_stage(bank: FilterBank, targets: list[DepthwiseConv]) -> dict[str, str | None]:
    """The ``"size"`` mapping: :func:`match_by_stage` preferring the target's own kernel size at any depth (kept so
    earlier results reproduce; ``"depth"`` now prefers the target's size too, and aligns by structure).

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.load_master_filters("imagenet-lite0")
        >>> targets = masterkey.find_depthwise_convs(timm.create_model("mobilenetv3_large_100"))
        >>> match_by_size_then_stage(bank, targets)["blocks.2.0.conv_dw"]  # "depth" gives it blocks.2.0.conv_dw
        'blocks.2.1.conv_dw'
    """
    return match_by_stage(bank, targets, same_size_first=True)


#: The named mappings ``from_pretrained_filters(mapping=...)`` accepts.
MAPPINGS: dict[str, MappingFn] = {
    "exact": match_exact,
    "depth": match_by_depth,
    "stage": match_by_stage,
    "size": match_by_size_then_stage,
}

#: The mappings that need the target convs' feature strides (one forward pass of the target model).
STRUCTURAL_MAPPINGS = frozenset({"depth"})


def resolve_mapping(
    bank: FilterBank, targets: list[DepthwiseConv], mapping: str | MappingFn
) -> dict[str, str | None]:
    """Run ``mapping`` (a name in :data:`MAPPINGS` or a callable) and check every name it returns.

    Raises:
        MappingError: an unknown mapping name, or a plan naming targets or bank entries that do not exist.

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.load_master_filters("imagenet-lite0")
        >>> targets = masterkey.find_depthwise_convs(timm.create_model("mobilenetv3_large_100"), feature_strides=True)
        >>> resolve_mapping(bank, targets, "depth")["blocks.2.0.conv_dw"]
        'blocks.2.0.conv_dw'
    """
    if isinstance(mapping, str):
        if mapping not in MAPPINGS:
            raise MappingError(
                f"mapping={mapping!r} is unknown; choose one of {', '.join(MAPPINGS)} or pass a callable."
            )
        plan = MAPPINGS[mapping](bank, targets)
    else:
        plan = mapping(bank, targets)
        if not isinstance(plan, Mapping):
            raise MappingError(
                f"The mapping callable {getattr(mapping, '__name__', mapping)!r} returned a {type(plan).__name__}; it "
                "must return a mapping {target conv name: bank entry name or None}."
            )
        plan = dict(plan)
    target_names = {t.name for t in targets}
    unknown_targets = sorted(set(plan) - target_names)
    unknown_sources = sorted({s for s in plan.values() if s is not None and s not in bank})
    if unknown_targets or unknown_sources:
        raise MappingError(
            f"The mapping names modules that do not exist: targets {unknown_targets[:5]}, bank entries "
            f"{unknown_sources[:5]}. Targets must come from find_depthwise_convs(model), sources from bank.names."
        )
    return {t.name: plan.get(t.name) for t in targets}


def unmapped_reason(bank: FilterBank, target: DepthwiseConv) -> str:
    """Why ``target`` got no bank entry, for the injection report.

    Example:
        >>> import masterkey
        >>> from torch import nn
        >>> bank = masterkey.load_master_filters("imagenet-lite0")  # square kernels only
        >>> target = masterkey.find_depthwise_convs(nn.Sequential(nn.Conv2d(8, 8, (1, 7), groups=8)))[0]
        >>> unmapped_reason(bank, target)[:63]
        '1x7 horizontal kernel and the bank has none of that orientation'
    """
    size = target.spec.kernel_size
    kind = kernel_orientation(size)
    if not any(kernel_orientation(s.kernel_size) == kind for s in bank.specs):
        return (
            f"{size[0]}x{size[1]} {kind} kernel and the bank has none of that orientation "
            "(kernels are never stretched across orientations)"
        )
    return "no bank entry for this conv"


def select_channels(n: int, m: int) -> torch.Tensor:
    """Indices of the ``n`` source filters that ``m`` target channels take: channel ``i`` takes ``floor(i * n / m)``.

    Example:
        >>> select_channels(4, 2).tolist(), select_channels(2, 4).tolist()
        ([0, 2], [0, 0, 1, 1])
    """
    return torch.arange(m) * n // m


#: How :func:`resize_kernel` changes a kernel's size: ``"geometric"`` (centre-crop, zero-pad or resample) or
#: ``"universal"`` (re-rendered from the best-fitting universal key; odd square sizes only, others geometric).
RESIZE_METHODS = ("geometric", "universal")


def check_resize(method: str) -> None:
    """Refuse (:class:`~masterkey.errors.ArgumentError`) a resize method not in :data:`RESIZE_METHODS`.

    Example:
        >>> check_resize("geometric")  # one of RESIZE_METHODS: returns None
    """
    if method not in RESIZE_METHODS:
        raise ArgumentError(f"resize={method!r} is not a resize method; choose one of {', '.join(RESIZE_METHODS)}.")


def _odd_square(size: tuple[int, int]) -> bool:
    return size[0] == size[1] and size[0] % 2 == 1 and size[0] >= 3


def _resize_method(source: tuple[int, int], target: tuple[int, int], method: str = "geometric") -> str:
    if method == "universal" and _odd_square(source) and _odd_square(target):
        return "universal re-render"
    if any((s - t) % 2 for s, t in zip(source, target)):
        return "resample"
    grows, shrinks = any(t > s for s, t in zip(source, target)), any(t < s for s, t in zip(source, target))
    return "centre-crop/zero-pad" if grows and shrinks else "zero-pad" if grows else "centre-crop"


def resize_kernel(kernel: torch.Tensor, size: tuple[int, int], *, method: str = "geometric") -> torch.Tensor:
    """Resize kernels ``(n, 1, h, w)`` to ``size``, keeping each filter's sum and, where possible, its L2 norm.

    ``method="geometric"``: centre-crop / zero-pad when the difference is even on both axes, bilinear resampling
    otherwise. ``method="universal"``: each filter becomes its best-fitting universal key drawn at ``size``, with the
    sign of its fit (odd square sizes; others fall back to geometric). See the module docstring for what is
    preserved.

    Example:
        >>> k = torch.randn(8, 1, 3, 3)
        >>> big = resize_kernel(k, (7, 7))
        >>> torch.equal(big[..., 2:5, 2:5], k), big.shape
        (True, torch.Size([8, 1, 7, 7]))
    """
    check_resize(method)
    h, w = kernel.shape[-2:]
    th, tw = size
    method = _resize_method((h, w), (th, tw), method)
    if method == "universal re-render":
        fit = fit_universal(kernel, keys="idealized")  # the keys it is drawn with: same signs
        # a constant filter fits no key (key -1): it is rendered flat, then given back its sum below
        rendered = idealized_keys(th)[fit.key.clamp(min=0)] * torch.where(fit.key >= 0, fit.a, 0.0)[:, None, None]
        resized = rendered[:, None]
    elif method == "resample":
        resized = F.interpolate(kernel, size=(th, tw), mode="bilinear", align_corners=False, antialias=th < h or tw < w)
    else:
        # F.pad takes (left, right, top, bottom); negative amounts crop
        dh, dw = (th - h) // 2, (tw - w) // 2
        resized = F.pad(kernel, (dw, dw, dh, dh))
    # zero-padding already keeps sum and norm; restoring them would only add rounding
    return resized if method == "zero-pad" else _restore_sum_and_norm(resized, kernel)


def _restore_sum_and_norm(resized: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    # f = mean + zero-mean part; the mean fixes the sum, the zero-mean part is scaled to make up the rest of the
    # norm: |f|^2 = sum^2 / n + |zero-mean part|^2. When sum^2 / n alone exceeds the old norm, no filter of the
    # new size has both, and the flat filter (zero-mean part 0) keeps the sum.
    dims, n = (-2, -1), resized.shape[-2] * resized.shape[-1]
    total = source.sum(dims, keepdim=True)
    energy = source.pow(2).sum(dims, keepdim=True)
    centred = resized - resized.mean(dims, keepdim=True)
    centred_energy = centred.pow(2).sum(dims, keepdim=True)
    wanted = (energy - total.pow(2) / n).clamp_min(0)
    scale = torch.where(centred_energy > 0, (wanted / centred_energy.clamp_min(1e-30)).sqrt(), 0.0)
    return total / n + scale * centred


def fit_kernel(
    kernel: torch.Tensor, *, out_channels: int, kernel_size: tuple[int, int], resize: str = "geometric"
) -> tuple[torch.Tensor, list[str]]:
    """Fit source kernels ``(n, 1, h, w)`` to a target conv: channels with :func:`select_channels`, then size with
    :func:`resize_kernel` (``resize`` is its method). Returns the kernels and the transforms applied, as the
    injection report lists them.

    Example:
        >>> fitted, transforms = fit_kernel(torch.randn(40, 1, 3, 3), out_channels=48, kernel_size=(7, 7))
        >>> transforms
        ['channels 40->48 evenly spaced', 'kernel 3x3->7x7 zero-pad']
    """
    transforms = []
    n, _, h, w = kernel.shape
    if n != out_channels:
        kernel = kernel[select_channels(n, out_channels)]
        transforms.append(f"channels {n}->{out_channels} evenly spaced")
    if (h, w) != tuple(kernel_size):
        th, tw = kernel_size
        transforms.append(f"kernel {h}x{w}->{th}x{tw} {_resize_method((h, w), (th, tw), resize)}")
        kernel = resize_kernel(kernel, (th, tw), method=resize)
    return kernel, transforms
