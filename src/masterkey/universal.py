"""The 8 universal master key filters, affine fitting of any bank to them, and universal injection.

Babaiee et al. (arXiv 2509.11711) found that nearly every trained depthwise filter is an affine image
``a * f_k + b`` of one of 8 universal 7x7 filters ``f_k``; Lindeberg, Babaiee and Kiasari (arXiv 2509.12746) model
the 8 as idealized discrete scale-space filters. This module ships both sets:

- the **learned** keys: the published 7x7 values (CC BY 4.0, see ``data/master_key_8_filters.txt``);
- the **idealized** keys: rendered from their scale-space definitions at any odd size (3, 5, 7, 9, ...).

Both are normalized to mean 0 and L2 norm 1, so the best affine fit of a filter ``y`` to key ``k`` is
``a = <y, f_k>``, ``b = mean(y)``, and the share of ``y``'s variance it explains is
``R^2 = <y, f_k>^2 / ||y - mean(y)||^2`` (the squared cosine between the centred filter and the key).

**Kernel sizes.** The learned keys exist only at 7x7. ``keys="learned"`` therefore fits 7x7 kernels against the
learned keys and every other odd square size against the idealized keys rendered at that size (the learned values
are never resampled: the scale-space models are their size-free form). Non-square kernels (InceptionNeXt's 1x11
bands) and even sizes are skipped and counted in :attr:`UniversalFit.skipped`.

**Idealized definitions** (``T(n; s) = exp(-s) I_n(s)``, the discrete analogue of the Gaussian with ``s = sigma^2``,
applied separably; kernel row ``r`` and column ``c`` of a size-``m`` kernel sit at ``x = c - m // 2`` and
``y = m // 2 - r``, i.e. ``y`` points up, which reproduces the signs of the learned filters except 2 and 3):
:data:`KEY_MODELS` and :data:`IDEALIZED_SIGMAS`.

Example:
    >>> import masterkey
    >>> fit = masterkey.fit_universal(masterkey.universal_bank("idealized", size=5))
    >>> fit.key.tolist(), round(fit.r2.min().item(), 6)
    ([0, 1, 2, 3, 4, 5, 6, 7], 1.0)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .bank import FilterBank, KernelSpec
from .errors import FitError, InvalidFiltersError
from .extract import find_depthwise_convs, prepare_model
from .inject import (
    TRAINABLE_POLICIES,
    InjectionEntry,
    InjectionReport,
    freeze_depthwise,
    trainable_parameters,
)

__all__ = [
    "KEY_NAMES",
    "KEY_MODELS",
    "IDEALIZED_SIGMAS",
    "R2_THRESHOLDS",
    "learned_keys",
    "idealized_keys",
    "universal_bank",
    "fit_universal",
    "LayerFit",
    "UniversalFit",
    "KeyAffine",
    "inject_universal",
    "export_universal",
    "write_cards",
]

#: Number of universal keys.
NUM_KEYS = 8
#: Size of the learned keys.
LEARNED_SIZE = 7
#: Short name of each key (1-based in the papers, 0-based here).
KEY_NAMES = ("dy+ T", "dx- T", "dy- T", "dx+ T", "dx T", "dy T", "T - g Lap T", "T")
#: What each key is, in words.
KEY_MODELS = (
    "forward difference in y of a Gaussian",
    "backward difference in x of a Gaussian",
    "backward difference in y of a Gaussian",
    "forward difference in x of a Gaussian",
    "centred first derivative in x of a Gaussian",
    "centred first derivative in y of a Gaussian",
    "Gaussian minus 0.5 times its 5-point Laplacian (difference of Gaussians)",
    "Gaussian",
)
#: ``(sigma_x, sigma_y)`` of each idealized key: the "method B" estimates of arXiv 2509.12746.
IDEALIZED_SIGMAS = (
    (0.644, 0.583),
    (0.586, 0.644),
    (0.690, 0.674),
    (0.756, 0.460),
    (1.107, 0.945),
    (0.900, 0.889),
    (0.675, 0.675),
    (0.609, 0.601),
)
#: ``gamma`` of key 7, ``T - gamma * Laplacian_5(T)``.
LAPLACIAN_GAMMA = 0.5
#: R^2 thresholds reported by the summaries.
R2_THRESHOLDS = (0.5, 0.7, 0.9)

_DATA_FILE = "master_key_8_filters.txt"
_KINDS = ("learned", "idealized")
_LEARNED_INFO = {
    "source_model": "convnextv2_tiny",
    "source_weights": "the 8 master key filters published with arXiv:2509.11711 (tonylindeberg/masterfiltmodel)",
    "source_dataset": "imagenet-1k",
    "source_license": "CC-BY-4.0",
    "description": "The 8 universal master key filters (7x7) found in the depthwise convolutions of ConvNeXt-V2 "
    "Tiny by Babaiee, Kiasari, Rus and Grosu (arXiv:2509.11711), mean 0 and L2 norm 1.",
}
_IDEALIZED_INFO = {
    "source_model": "idealized-scale-space",
    "source_weights": "rendered by masterkey from the scale-space models and sigmas of arXiv:2509.12746",
    "source_license": "CC-BY-4.0",
    "description": "The 8 universal master key filters as idealized discrete scale-space filters (Lindeberg, Babaiee, "
    "Kiasari, arXiv:2509.12746), rendered at {size}x{size}, mean 0 and L2 norm 1.",
}


# -- the keys -------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _read_learned() -> torch.Tensor:
    text = resources.files("masterkey").joinpath("data", _DATA_FILE).read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith(("#", "Filter"))]
    return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32).reshape(
        NUM_KEYS, LEARNED_SIZE, LEARNED_SIZE
    )


def learned_keys() -> torch.Tensor:
    """The 8 learned master key filters, ``(8, 7, 7)`` float32, exactly as published (mean 0, L2 norm 1).

    Values: Babaiee, Kiasari, Rus, Grosu, arXiv:2509.11711, CC BY 4.0; credit them wherever the values are shown.

    Example:
        >>> keys = learned_keys()
        >>> keys.shape, round(keys[7, 3, 3].item(), 6)
        (torch.Size([8, 7, 7]), 0.920885)
    """
    return _read_learned().clone()


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise FitError(
            f"Idealized keys are rendered at odd sizes of at least 3 (3, 5, 7, ...), not {size!r}: their centre must "
            "fall on a pixel."
        )
    return size


@functools.lru_cache(maxsize=16)
def _render_idealized(size: int) -> torch.Tensor:
    from scipy.special import ive  # imported here so that `import masterkey` stays light
    half = size // 2
    n = np.arange(-half - 1, half + 2)  # one extra sample each side for the differences
    inner = slice(1, -1)
    keys = []
    for k, (sigma_x, sigma_y) in enumerate(IDEALIZED_SIGMAS):
        tx, ty = ive(n, sigma_x**2), ive(n, sigma_y**2)
        # 1-D factors on the inner grid: value, forward / backward / centred difference, second difference
        gx, gy = tx[inner], ty[inner]
        fwd = lambda t: t[2:] - t[1:-1]  # noqa: E731  (delta_+ t)(n) = t(n+1) - t(n)
        bwd = lambda t: t[1:-1] - t[:-2]  # noqa: E731  (delta_- t)(n) = t(n) - t(n-1)
        ctr = lambda t: (t[2:] - t[:-2]) / 2  # noqa: E731
        lap = lambda t: t[2:] - 2 * t[1:-1] + t[:-2]  # noqa: E731
        x_factor, y_factor = {
            0: (gx, fwd(ty)),
            1: (bwd(tx), gy),
            2: (gx, bwd(ty)),
            3: (fwd(tx), gy),
            4: (ctr(tx), gy),
            5: (gx, ctr(ty)),
        }.get(k, (gx, gy))
        f = np.outer(y_factor, x_factor)  # f[y + half, x + half]
        if k == 6:  # T - gamma * (5-point Laplacian of T), the Laplacian being separable into two second differences
            f = f - LAPLACIAN_GAMMA * (np.outer(gy, lap(tx)) + np.outer(lap(ty), gx))
        f = f[::-1]  # rows run top to bottom while y points up
        f = f - f.mean()
        keys.append(f / np.linalg.norm(f))
    return torch.tensor(np.stack(keys), dtype=torch.float32)


def idealized_keys(size: int = LEARNED_SIZE) -> torch.Tensor:
    """The 8 idealized scale-space keys rendered at ``size`` x ``size`` (any odd size >= 3), ``(8, size, size)``
    float32, each normalized to mean 0 and L2 norm 1 after truncation to the window.

    Keys 2 and 3 come out with the opposite sign to the learned ones (the sign conventions of Gaussian derivatives);
    an affine fit absorbs the sign.

    Raises:
        FitError: ``size`` is even or smaller than 3.

    Example:
        >>> idealized_keys(5).shape
        torch.Size([8, 5, 5])
    """
    return _render_idealized(_check_size(size)).clone()


def _keys_for(kind: str, size: int) -> tuple[torch.Tensor, str]:
    """The keys a ``kind`` uses at ``size`` and their label: the learned ones at 7x7, else the idealized ones."""
    if kind not in _KINDS:
        raise FitError(f"keys={kind!r} is not a key set; choose 'learned', 'idealized' or pass a tensor of keys.")
    if kind == "learned" and size == LEARNED_SIZE:
        return _read_learned(), f"learned-{size}x{size}"
    return _render_idealized(_check_size(size)), f"idealized-{size}x{size}"


def universal_bank(kind: str = "learned", *, size: int = LEARNED_SIZE) -> FilterBank:
    """The 8 keys as a one-entry :class:`FilterBank` (entry ``"universal_keys"``, shaped ``(8, 1, size, size)``),
    with provenance and licence in its config, ready for ``save_pretrained`` / ``push_to_hub``.

    Raises:
        FitError: ``kind="learned"`` with a size other than 7, an unknown kind, or an even size.

    Example:
        >>> bank = universal_bank("idealized", size=3)
        >>> bank["universal_keys"].shape
        torch.Size([8, 1, 3, 3])
    """
    if kind == "learned" and size != LEARNED_SIZE:
        raise FitError(
            f"The learned keys are 7x7; for {size}x{size} use universal_bank('idealized', size={size}), which renders "
            "the scale-space models at any odd size."
        )
    keys, _ = _keys_for(kind, size)
    info = dict(_LEARNED_INFO if kind == "learned" else _IDEALIZED_INFO)
    info["description"] = info["description"].format(size=size)
    info.update(key_names=list(KEY_NAMES), key_models=list(KEY_MODELS))
    if kind == "idealized":
        info.update(sigmas=[list(s) for s in IDEALIZED_SIGMAS], laplacian_gamma=LAPLACIAN_GAMMA)
    return FilterBank.from_tensors({"universal_keys": keys.clone()}, **info)


# -- fitting -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFit:
    """The affine fit of one layer's filters: for each filter (output channel) ``c``,
    ``filter[c] ~= a[c] * keys[key[c]] + b[c]`` explaining the share ``r2[c]`` of its variance.

    A constant filter (no variance) is fitted exactly by ``a = 0``; it gets ``key = -1`` and ``r2 = 1``.
    """

    name: str
    kernel_size: tuple[int, int]
    relative_depth: float
    keys: str
    key: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    r2: torch.Tensor
    stride: tuple[int, int] = (1, 1)

    @property
    def num_filters(self) -> int:
        return self.key.numel()


@dataclass(frozen=True)
class UniversalFit:
    """The affine fit of a bank (or a tensor of filters) to the universal keys, layer by layer.

    ``skipped`` maps each layer that was not fitted (non-square or even kernel) to its ``(num_filters, kh, kw)``.
    """

    layers: list[LayerFit]
    skipped: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    num_keys: int = NUM_KEYS

    def layer(self, name: str) -> LayerFit:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{name!r} was not fitted; fitted layers: {[layer.name for layer in self.layers][:10]}")

    def _cat(self, attr: str) -> torch.Tensor:
        return torch.cat([getattr(layer, attr) for layer in self.layers])

    @property
    def key(self) -> torch.Tensor:
        """Best key of every fitted filter, layers concatenated in depth order."""
        return self._cat("key")

    @property
    def a(self) -> torch.Tensor:
        return self._cat("a")

    @property
    def b(self) -> torch.Tensor:
        return self._cat("b")

    @property
    def r2(self) -> torch.Tensor:
        return self._cat("r2")

    @property
    def num_filters(self) -> int:
        return sum(layer.num_filters for layer in self.layers)

    def share_above(self, threshold: float, *, kernel_size: int | None = None) -> float:
        """Share of the fitted filters (of one square ``kernel_size`` when given) with ``R^2 >= threshold``."""
        layers = [lay for lay in self.layers if kernel_size is None or lay.kernel_size == (kernel_size, kernel_size)]
        r2 = torch.cat([lay.r2 for lay in layers]) if layers else torch.empty(0)
        return float((r2 >= threshold).float().mean()) if r2.numel() else float("nan")

    def key_usage(self) -> torch.Tensor:
        """How many fitted filters take each key (``(num_keys,)`` int64; constant filters are not counted)."""
        return _key_usage(self.key, self.num_keys)

    def layer_summaries(self, thresholds: Sequence[float] = R2_THRESHOLDS) -> list[dict[str, Any]]:
        """One JSON-ready dict per fitted layer: depth, size, key set, R^2 statistics, shares above ``thresholds``
        and key usage."""
        return [
            {
                "name": layer.name,
                "relative_depth": layer.relative_depth,
                "kernel_size": list(layer.kernel_size),
                "stride": list(layer.stride),
                "keys": layer.keys,
                **_r2_stats(layer.r2, layer.key, self.num_keys, thresholds),
            }
            for layer in self.layers
        ]

    def summary(self, thresholds: Sequence[float] = R2_THRESHOLDS) -> dict[str, Any]:
        """Whole-bank summary (JSON-ready): filters and layers fitted and skipped, R^2 statistics and shares above
        ``thresholds``, key usage, and the same per square kernel size."""
        sizes = sorted({layer.kernel_size for layer in self.layers})
        by_size = {}
        for size in sizes:
            layers = [lay for lay in self.layers if lay.kernel_size == size]
            r2 = torch.cat([lay.r2 for lay in layers])
            key = torch.cat([lay.key for lay in layers])
            by_size[f"{size[0]}x{size[1]}"] = {
                "layers": len(layers),
                "keys": sorted({lay.keys for lay in layers}),
                **_r2_stats(r2, key, self.num_keys, thresholds),
            }
        return {
            "layers_fitted": len(self.layers),
            "layers_skipped": len(self.skipped),
            "filters_skipped": sum(n for n, _, _ in self.skipped.values()),
            "skipped": {name: list(shape) for name, shape in self.skipped.items()},
            **_r2_stats(self.r2, self.key, self.num_keys, thresholds),
            "by_kernel_size": by_size,
        }

    def __repr__(self) -> str:
        skipped = f", {len(self.skipped)} layers skipped" if self.skipped else ""
        return (
            f"UniversalFit({self.num_filters} filters in {len(self.layers)} layers{skipped}; "
            f"mean R^2 {self.r2.mean().item():.3f}, R^2 >= 0.9: {self.share_above(0.9):.1%})"
        )


def _key_usage(key: torch.Tensor, num_keys: int) -> torch.Tensor:
    return torch.bincount(key[key >= 0], minlength=num_keys)


def _r2_stats(r2: torch.Tensor, key: torch.Tensor, num_keys: int, thresholds: Sequence[float]) -> dict[str, Any]:
    usage = _key_usage(key, num_keys)
    total = max(int(usage.sum()), 1)
    return {
        "filters": r2.numel(),
        "constant_filters": int((key < 0).sum()),
        "r2_mean": float(r2.mean()),
        "r2_median": float(r2.median()),
        "r2_quartiles": [
            float(q) for q in torch.quantile(r2.double(), torch.tensor([0.25, 0.75], dtype=torch.float64))
        ],
        "share_r2_at_least": {f"{t:g}": float((r2 >= t).float().mean()) for t in thresholds},
        "key_usage": usage.tolist(),
        "key_share": [c / total for c in usage.tolist()],
    }


# Rows fitted per matrix product: bounds the temporary memory to a few tens of MB whatever the input size.
_CHUNK = 1 << 16


def _fit_filters(filters: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Best key, ``a``, ``b`` and ``R^2`` of each of ``filters`` ``(n, h, w)`` against ``keys`` ``(k, h, w)``.

    Keys need not be normalized: ``a = <y_c, x_c> / ||x_c||^2`` and ``b = mean(y) - a * mean(x)`` (``_c`` = centred)
    are the least-squares affine fit, and ``R^2 = <y_c, x_c>^2 / (||x_c||^2 ||y_c||^2)``. One matrix product per
    chunk: a million 7x7 filters take about a second on two cores (``benchmarks/fit_universal.py``).
    """
    n, d = filters.shape[0], filters.shape[-2] * filters.shape[-1]
    x = keys.reshape(keys.shape[0], d).to(torch.float32)
    x_mean = x.mean(1)
    xc = x - x_mean[:, None]
    x_var = (xc * xc).sum(1)
    flat = filters.reshape(n, d)
    out = [torch.empty(n, dtype=torch.int64), *(torch.empty(n) for _ in range(3))]
    for start in range(0, n, _CHUNK):
        y = flat[start : start + _CHUNK].to(torch.float32)
        y_mean = y.mean(1)
        yc = y - y_mean[:, None]
        y_var = (yc * yc).sum(1)
        dots = yc @ xc.T
        explained, key = (dots * dots / x_var).max(1)
        a = dots.gather(1, key[:, None]).squeeze(1) / x_var[key]
        r2 = explained / y_var
        # a constant filter (variance at float32 rounding level) is b alone: no key, exact fit
        constant = y_var <= 1e-10 * (y * y).sum(1)
        key[constant], a[constant], r2[constant] = -1, 0.0, 1.0
        b = y_mean - a * torch.where(constant, 0.0, x_mean[key.clamp(min=0)])
        for o, v in zip(out, (key, a, b, r2.clamp(max=1.0)), strict=True):
            o[start : start + _CHUNK] = v
    return tuple(out)


def _as_keys(keys: Any) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(keys) if not isinstance(keys, torch.Tensor) else keys).to(torch.float32)
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 3 or tensor.shape[0] == 0:
        raise FitError(f"Keys must be shaped (num_keys, h, w) (or (num_keys, 1, h, w)), got {tuple(tensor.shape)}.")
    centred = tensor.reshape(tensor.shape[0], -1)
    flat = (centred - centred.mean(1, keepdim=True)).norm(dim=1)
    if not torch.isfinite(tensor).all() or (flat <= 1e-8).any():
        raise FitError("Every key must be finite and non-constant: a constant key cannot be told apart from b.")
    return tensor


def fit_universal(bank_or_tensor: FilterBank | torch.Tensor | np.ndarray, *, keys: Any = "learned") -> UniversalFit:
    """Fit every filter of a bank (or tensor) as ``a * key_k + b`` over the universal keys, vectorised.

    Args:
        bank_or_tensor: a :class:`FilterBank` (each square odd-sized layer is fitted; non-square or even kernels
            are skipped and counted in ``fit.skipped``) or a tensor of filters ``(n, h, w)`` / ``(n, 1, h, w)``
            (fitted as one layer named ``"filters"``).
        keys: ``"learned"`` (the learned keys at 7x7, the idealized ones rendered at any other size),
            ``"idealized"`` (rendered at each layer's size) or a tensor of keys ``(k, h, w)``, which must have the
            size of every fitted kernel.

    Raises:
        FitError: an empty bank or tensor, no square kernel at all, keys of another size than the filters, or an
            even size with the built-in keys.
        InvalidFiltersError: a tensor of filters holding NaN or Inf (a bank never does).

    Example:
        >>> import masterkey
        >>> fit = masterkey.fit_universal(masterkey.load_master_filters("imagenet-lite0"))
        >>> fit.summary()["share_r2_at_least"]
        {'0.5': ..., '0.7': ..., '0.9': ...}
    """
    if isinstance(bank_or_tensor, FilterBank):
        entries = [(spec, bank_or_tensor[spec.name]) for spec in bank_or_tensor.specs]
    else:
        tensor = torch.as_tensor(bank_or_tensor).detach().cpu()  # banks live on the CPU; so do fits
        if tensor.dim() == 2:
            tensor = tensor[None]
        if tensor.dim() not in (3, 4) or tensor.numel() == 0:
            raise FitError(
                f"Nothing to fit: expected filters shaped (n, h, w) or (n, 1, h, w), got {tuple(tensor.shape)}."
            )
        tensor = tensor.reshape(-1, *tensor.shape[-2:])
        if not torch.isfinite(tensor).all():
            raise InvalidFiltersError("The filters hold NaN or Inf values; fit finite filters only.")
        n, h, w = tensor.shape
        entries = [(KernelSpec(name="filters", in_channels=n, out_channels=n, kernel_size=(h, w)), tensor)]
    custom = None if isinstance(keys, str) else _as_keys(keys)
    layers, skipped = [], {}
    for spec, filters in entries:
        h, w = spec.kernel_size
        if h != w or (custom is None and h % 2 == 0):
            skipped[spec.name] = (filters.shape[0], h, w)
            continue
        if custom is not None:
            if tuple(custom.shape[-2:]) != (h, w):
                raise FitError(
                    f"The keys are {custom.shape[-2]}x{custom.shape[-1]} but {spec.name!r} holds {h}x{w} kernels. "
                    "Pass keys of that size, or keys='idealized' to render the universal keys at every size."
                )
            key_set, label = custom, f"custom-{h}x{w}"
        else:
            key_set, label = _keys_for(keys, h)
        key, a, b, r2 = _fit_filters(filters.reshape(-1, h, w), key_set)
        layers.append(LayerFit(spec.name, (h, w), spec.relative_depth, label, key, a, b, r2, spec.stride))
    if not layers:
        what = f"all {len(skipped)} layers have non-square or even kernels" if skipped else "the bank is empty"
        raise FitError(f"Nothing to fit: {what}. The universal keys are square and of odd size.")
    return UniversalFit(layers=layers, skipped=skipped, num_keys=NUM_KEYS if custom is None else custom.shape[0])


# -- universal injection ---------------------------------------------------------------------------------------------
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


def _spread_channels(n_source: int, n_target: int) -> torch.Tensor:
    """Evenly spaced source channels for ``n_target`` target channels (the identity when the counts agree)."""
    return torch.arange(n_target) * n_source // n_target


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
    the module docstring for ``keys``):

    - with a ``source`` bank (or its :class:`UniversalFit`), ``k``, ``a`` and ``b`` are those of the source's fit:
      a target conv takes the source layer of the same name and channel count when there is one, otherwise the
      source layer at the nearest relative depth, its channels spread evenly over the target's
      (``source channel = c * C_source // C_target``). ``a`` carries over unchanged across kernel sizes: all keys have
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
    if trainable not in TRAINABLE_POLICIES:
        raise ValueError(f"trainable={trainable!r} is not a policy; choose one of {', '.join(TRAINABLE_POLICIES)}.")
    if learn_affine not in (False, True, "shift"):
        raise ValueError(f"learn_affine={learn_affine!r}: choose False, True (scale and shift) or 'shift'.")
    _keys_for(keys, LEARNED_SIZE)  # validates the key set name up front
    fit, source_label = _resolve_source(source)
    model = prepare_model(model, reparameterize=reparameterize, **model_kwargs)
    targets = find_depthwise_convs(model)

    entries, injected, used = [], [], set()
    for target in targets:
        spec = target.spec
        h, w = spec.kernel_size
        if h != w or h % 2 == 0:
            entries.append(InjectionEntry(target.name, None, False, reason=f"{h}x{w} kernel: the keys are square, odd"))
            continue
        key_set, label = _keys_for(keys, h)
        transforms = [f"keys {label}"]
        if fit is None:
            key = torch.arange(spec.out_channels) % NUM_KEYS
            a, b = torch.ones(spec.out_channels), torch.zeros(spec.out_channels)
            source_name = None
            transforms.append("key = channel mod 8, a = 1, b = 0")
        else:
            layer = _nearest_layer(fit, spec)
            channels = _spread_channels(layer.num_filters, spec.out_channels)
            key, a, b = layer.key[channels], layer.a[channels], layer.b[channels]
            key, a = key.clamp(min=0), torch.where(key < 0, 0.0, a)  # a constant source filter is b alone
            source_name = layer.name
            used.add(layer.name)
            transforms.append(f"fit of {layer.name} ({layer.keys})")
            if layer.num_filters != spec.out_channels:
                transforms.append(f"channels {layer.num_filters}->{spec.out_channels} evenly spaced")
        if learn_affine:
            transforms.append("learnable shift" if learn_affine == "shift" else "learnable scale and shift")
        entries.append(InjectionEntry(target.name, source_name, True, transforms=transforms))
        injected.append((target, key_set[key][:, None], a, b))

    with torch.no_grad():
        for target, unit, a, b in injected:
            weight = target.module.weight
            kernel = unit if learn_affine else a[:, None, None, None] * unit + b[:, None, None, None]
            weight.copy_(kernel.to(dtype=weight.dtype, device=weight.device))
    # freeze while the weights are still plain parameters: they become the parametrizations' frozen originals
    freeze_depthwise(model, trainable=trainable, freeze=freeze, convs=[t for t, *_ in injected])
    if learn_affine:
        for target, _, a, b in injected:
            weight = target.module.weight
            affine = KeyAffine(a, b, learn_scale=learn_affine is True).to(dtype=weight.dtype, device=weight.device)
            parametrize.register_parametrization(target.module, "weight", affine)

    model.masterkey_report = InjectionReport(
        bank=f"the 8 universal keys ({keys}), {source_label}",
        mapping="key = channel mod 8" if fit is None else "fit of the source, nearest relative depth",
        entries=entries,
        unused=[] if fit is None else [layer.name for layer in fit.layers if layer.name not in used],
        frozen=freeze and trainable != "all",
        trainable_policy=trainable,
        parameters=trainable_parameters(model),
    )
    return model


def _resolve_source(source: FilterBank | UniversalFit | str | Path | None) -> tuple[UniversalFit | None, str]:
    """The source's fit and how the report names it."""
    if source is None:
        return None, "no source"
    if isinstance(source, UniversalFit):
        if source.num_keys != NUM_KEYS:
            raise FitError(
                f"The source fit uses {source.num_keys} custom keys; universal injection needs a fit to the 8 "
                "universal keys (keys='learned' or 'idealized')."
            )
        return source, f"assignment from a fit of {source.num_filters} filters"
    if not isinstance(source, FilterBank):
        from .hub import load_master_filters

        source = load_master_filters(source)
    # the learned keys where the source is 7x7: they describe trained filters best
    return fit_universal(source, keys="learned"), f"assignment fitted to {source!r}"


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


# -- Hub artifacts -------------------------------------------------------------------------------------------------
def _keys_table() -> str:
    learned, ideal = learned_keys(), idealized_keys(LEARNED_SIZE)
    corr = (learned * ideal).sum((1, 2))  # both have mean 0 and norm 1: the dot product is the correlation
    lines = [
        "| # | name | idealized model | sigma_x | sigma_y | correlation learned vs idealized (7x7) |",
        "|---|---|---|---|---|---|",
    ]
    for k in range(NUM_KEYS):
        sx, sy = IDEALIZED_SIGMAS[k]
        lines.append(f"| {k + 1} | `{KEY_NAMES[k]}` | {KEY_MODELS[k]} | {sx:.3f} | {sy:.3f} | {corr[k].item():+.3f} |")
    return "\n".join(lines)


_LICENCE_TEXT = (
    "The learned values are those published by Babaiee, Kiasari, Rus and Grosu with *The Quest for Universal Master "
    "Key Filters in DS-CNNs* (arXiv:2509.11711) in the repository `tonylindeberg/masterfiltmodel`, under "
    "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/); the idealized models and their sigma values are "
    "those of Lindeberg, Babaiee and Kiasari, *Idealized discrete scale-space models of the master key filters* "
    "(arXiv:2509.12746). Credit both papers wherever these filters are used or shown."
)


def write_cards(
    out_dir: str | Path,
    *,
    size: int = LEARNED_SIZE,
    experiments_dir: str | Path | None = None,
    lite0_explained: str | None = None,
) -> list[Path]:
    """Write the Hub folders ``universal-learned-8`` and ``universal-idealized-8`` (``filters.safetensors``,
    ``config.json``, ``README.md``) under ``out_dir``; returns their paths. The cards' tables are computed here;
    with ``experiments_dir`` the cards also carry the experiments' results for ``--filters universal-<kind>`` (and,
    on the idealized card, ``universal-imagenet-lite0``, whose keys are rendered from the idealized definitions at
    3x3 and 5x5). ``lite0_explained`` is :func:`masterkey.analysis.explained_table` of the ImageNet lite0 bank
    (computed here when not given).

    Example:
        >>> write_cards("hub_cards")  # masterkey cards --out hub_cards writes these and every other bank's folder
    """
    usage = (
        "```python\nimport masterkey\n\n"
        "# fit any bank: best key, a, b and R^2 for every filter\n"
        'fit = masterkey.fit_universal(masterkey.load_master_filters("imagenet-lite0"))\n'
        'print(fit.summary()["share_r2_at_least"])\n\n'
        "# a model whose depthwise kernels are frozen keys with a learnable per-channel shift\n"
        'model = masterkey.inject_universal("convnext_atto", learn_affine="shift", num_classes=10)\n'
        "model = masterkey.export_universal(model)  # fold back into a plain timm model\n```"
    )
    from .analysis import explained_table
    from .hub import load_master_filters, publish_bank

    lite0 = (
        "Share of the depthwise filters of `tf_efficientnet_lite0` trained on ImageNet-1k "
        '(`masterkey.load_master_filters("imagenet-lite0")`) whose best affine fit `a * f_k + b` explains at least '
        "the given share R² of their variance; in parentheses the same for i.i.d. Gaussian filters of that size "
        "(chance level). Its kernels are 3x3 and 5x5, so the idealized keys are rendered at those sizes. Computed by "
        "`masterkey.analysis.explained_table` when this card was written.\n\n"
        + (lite0_explained or explained_table(load_master_filters("imagenet-lite0")))
    )
    written = []
    for kind in _KINDS:
        folder = Path(out_dir) / f"universal-{kind}-8"
        what = (
            "the 7x7 values learned by ConvNeXt-V2 Tiny on ImageNet-1k"
            if kind == "learned"
            else f"the idealized discrete scale-space models rendered at {size}x{size} (any odd size is available "
            f"with `masterkey.universal_bank('idealized', size=...)`)"
        )
        card = {
            "title": f"The 8 universal master key filters ({kind})",
            "summary": "The 8 universal depthwise filters of which nearly every trained depthwise filter is an affine "
            f"image `a * f_k + b` (arXiv:2509.11711): {what}. The bank holds one entry, `universal_keys`, shaped "
            "(8, 1, k, k), each filter with mean 0 and L2 norm 1. Use them with `masterkey.fit_universal` and "
            "`masterkey.inject_universal` rather than as a per-layer bank.",
            "example_model": "convnext_atto",
            "sections": [
                ("The 8 keys", _keys_table()),
                ("What they explain in an ImageNet bank", lite0),
                ("Fitting and injecting them", usage),
                ("Licence", _LICENCE_TEXT),
            ],
            "credits": ["Learned values: CC BY 4.0, from tonylindeberg/masterfiltmodel (model-fitting/8Filters.txt)."],
        }
        results = []
        if experiments_dir is not None:
            from .cards import experiment_card_results

            specs = [f"universal-{kind}"] + (["universal-imagenet-lite0"] if kind == "idealized" else [])
            for spec in specs:
                rows, sections = experiment_card_results(experiments_dir, spec)
                results += rows
                card["sections"] += sections
        publish_bank(universal_bank(kind, size=size), folder=folder, results=results, card_kwargs=card, dry_run=True)
        written.append(folder)
    return written

