"""Affine fitting of any bank (or tensor of filters) to the 8 universal keys, vectorised.

The keys (:mod:`masterkey.keys`) have mean 0 and L2 norm 1, so the best affine fit of a filter ``y`` to key ``k`` is
``a = <y, f_k>``, ``b = mean(y)``, and the share of ``y``'s variance it explains is
``R^2 = <y, f_k>^2 / ||y - mean(y)||^2`` (the squared cosine between the centred filter and the key).

**Kernel sizes.** ``keys="learned"`` fits 7x7 kernels against the learned keys and every other odd square size
against the idealized keys rendered at that size (:func:`masterkey.keys.keys_for`). Non-square kernels
(InceptionNeXt's 1x11 bands) and even sizes are skipped and counted in :attr:`UniversalFit.skipped`.

Example:
    >>> import masterkey
    >>> fit = masterkey.fit_universal(masterkey.universal_bank("idealized", size=5))
    >>> fit.key.tolist(), round(fit.r2.min().item(), 6)
    ([0, 1, 2, 3, 4, 5, 6, 7], 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .bank import FilterBank, KernelSpec
from .errors import FitError, InvalidFiltersError
from .keys import NUM_KEYS, keys_for

__all__ = ["R2_THRESHOLDS", "LayerFit", "UniversalFit", "fit_universal", "key_usage"]

#: R^2 thresholds reported by the summaries.
R2_THRESHOLDS = (0.5, 0.7, 0.9)


@dataclass(frozen=True)
class LayerFit:
    """The affine fit of one layer's filters: for each filter (output channel) ``c``,
    ``filter[c] ~= a[c] * keys[key[c]] + b[c]`` explaining the share ``r2[c]`` of its variance.

    ``key_set`` names the keys it was fitted to (``"learned-7x7"``, ``"idealized-3x3"``, ``"custom-5x5"``). A constant
    filter (no variance) is fitted exactly by ``a = 0``; it gets ``key = -1`` and ``r2 = 1``.
    """

    name: str
    kernel_size: tuple[int, int]
    relative_depth: float
    key_set: str
    key: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    r2: torch.Tensor
    stride: tuple[int, int] = (1, 1)

    @property
    def num_filters(self) -> int:
        return self.key.numel()

    def key_share(self, num_keys: int = NUM_KEYS) -> list[float]:
        """Share of the layer's non-constant filters that take each key."""
        usage = key_usage(self.key, num_keys).double()
        return (usage / usage.sum().clamp(min=1)).tolist()


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
        """Share of the fitted filters (of one square ``kernel_size`` when given) with ``R^2 >= threshold``.

        Example:
            >>> import masterkey
            >>> fit = fit_universal(masterkey.load_master_filters("imagenet-lite0"))
            >>> round(fit.share_above(0.9), 2)  # the ImageNet lite0 bank: 13% of its filters fit with R^2 >= 0.9
            0.13
        """
        layers = [lay for lay in self.layers if kernel_size is None or lay.kernel_size == (kernel_size, kernel_size)]
        r2 = torch.cat([lay.r2 for lay in layers]) if layers else torch.empty(0)
        return float((r2 >= threshold).float().mean()) if r2.numel() else float("nan")

    def key_usage(self) -> torch.Tensor:
        """How many fitted filters take each key (``(num_keys,)`` int64; constant filters are not counted).

        Example:
            >>> import masterkey
            >>> fit_universal(masterkey.load_master_filters("imagenet-lite0")).key_usage().shape
            torch.Size([8])
        """
        return key_usage(self.key, self.num_keys)

    def layer_summaries(self, thresholds: Sequence[float] = R2_THRESHOLDS) -> list[dict[str, Any]]:
        """One JSON-ready dict per fitted layer: depth, size, key set, R^2 statistics, shares above ``thresholds``
        and key usage.

        Example:
            >>> import masterkey
            >>> len(fit_universal(masterkey.load_master_filters("imagenet-lite0")).layer_summaries())
            16
        """
        return [
            {
                "name": layer.name,
                "relative_depth": layer.relative_depth,
                "kernel_size": list(layer.kernel_size),
                "stride": list(layer.stride),
                "keys": layer.key_set,
                **_r2_stats(layer.r2, layer.key, self.num_keys, thresholds),
            }
            for layer in self.layers
        ]

    def summary(self, thresholds: Sequence[float] = R2_THRESHOLDS) -> dict[str, Any]:
        """Whole-bank summary (JSON-ready): filters and layers fitted and skipped, R^2 statistics and shares above
        ``thresholds``, key usage, and the same per square kernel size.

        Example:
            >>> import masterkey
            >>> summary = fit_universal(masterkey.load_master_filters("imagenet-lite0")).summary()
            >>> sorted(summary)[:3]
            ['by_kernel_size', 'constant_filters', 'filters']
        """
        sizes = sorted({layer.kernel_size for layer in self.layers})
        by_size = {}
        for size in sizes:
            layers = [lay for lay in self.layers if lay.kernel_size == size]
            r2 = torch.cat([lay.r2 for lay in layers])
            key = torch.cat([lay.key for lay in layers])
            by_size[f"{size[0]}x{size[1]}"] = {
                "layers": len(layers),
                "keys": sorted({lay.key_set for lay in layers}),
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


def key_usage(key: torch.Tensor, num_keys: int = NUM_KEYS) -> torch.Tensor:
    """How many filters take each key: a ``(num_keys,)`` int64 histogram of ``key`` (constant filters, ``key = -1``,
    are not counted).

    Example:
        >>> key_usage(torch.tensor([0, 0, 7, -1])).tolist()
        [2, 0, 0, 0, 0, 0, 0, 1]
    """
    return torch.bincount(key[key >= 0], minlength=num_keys)


def _r2_stats(r2: torch.Tensor, key: torch.Tensor, num_keys: int, thresholds: Sequence[float]) -> dict[str, Any]:
    usage = key_usage(key, num_keys)
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
            key_set, label = keys_for(keys, h)
        key, a, b, r2 = _fit_filters(filters.reshape(-1, h, w), key_set)
        layers.append(LayerFit(spec.name, (h, w), spec.relative_depth, label, key, a, b, r2, spec.stride))
    if not layers:
        what = f"all {len(skipped)} layers have non-square or even kernels" if skipped else "the bank is empty"
        raise FitError(f"Nothing to fit: {what}. The universal keys are square and of odd size.")
    return UniversalFit(layers=layers, skipped=skipped, num_keys=NUM_KEYS if custom is None else custom.shape[0])
