"""The 8 universal master key filters: the learned values and the idealized scale-space models.

Babaiee et al. (arXiv 2509.11711) found that nearly every trained depthwise filter is an affine image
``a * f_k + b`` of one of 8 universal 7x7 filters ``f_k``; Lindeberg, Babaiee and Kiasari (arXiv 2509.12746) model
the 8 as idealized discrete scale-space filters. This module ships both sets:

- the **learned** keys: the published 7x7 values (CC BY 4.0, see ``data/master_key_8_filters.txt``);
- the **idealized** keys: rendered from their scale-space definitions at any odd size (3, 5, 7, 9, ...).

Both are normalized to mean 0 and L2 norm 1. The learned keys exist only at 7x7; :func:`keys_for` gives the key set a
kind uses at a size (the learned ones at 7x7, the idealized ones at every other odd size: the learned values are
never resampled, the scale-space models are their size-free form). Fitting filters to them is
:mod:`masterkey.fitting`; injecting them is :mod:`masterkey.universal_injection`.

**Idealized definitions** (``T(n; s) = exp(-s) I_n(s)``, the discrete analogue of the Gaussian with ``s = sigma^2``,
applied separably; kernel row ``r`` and column ``c`` of a size-``m`` kernel sit at ``x = c - m // 2`` and
``y = m // 2 - r``, i.e. ``y`` points up, which reproduces the signs of the learned filters except 2 and 3):
:data:`KEY_MODELS` and :data:`IDEALIZED_SIGMAS`.

Example:
    >>> from masterkey.keys import idealized_keys, key_correlation
    >>> idealized_keys(5).shape, [round(c, 2) for c in key_correlation()][-1]
    (torch.Size([8, 5, 5]), 1.0)
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch
from scipy.special import ive

from .bank import FilterBank
from .errors import FitError

__all__ = [
    "NUM_KEYS",
    "LEARNED_SIZE",
    "KEY_NAMES",
    "KEY_MODELS",
    "IDEALIZED_SIGMAS",
    "KEY_KINDS",
    "learned_keys",
    "idealized_keys",
    "keys_for",
    "key_correlation",
    "universal_bank",
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

_DATA_FILE = "master_key_8_filters.txt"
#: The two key sets.
KEY_KINDS = ("learned", "idealized")
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


def keys_for(kind: str, size: int) -> tuple[torch.Tensor, str]:
    """The keys a ``kind`` uses at ``size`` and their label: the learned ones at 7x7, else the idealized ones."""
    if kind not in KEY_KINDS:
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
    keys, _ = keys_for(kind, size)
    info = dict(_LEARNED_INFO if kind == "learned" else _IDEALIZED_INFO)
    info["description"] = info["description"].format(size=size)
    info.update(key_names=list(KEY_NAMES), key_models=list(KEY_MODELS))
    if kind == "idealized":
        info.update(sigmas=[list(s) for s in IDEALIZED_SIGMAS], laplacian_gamma=LAPLACIAN_GAMMA)
    return FilterBank.from_tensors({"universal_keys": keys.clone()}, **info)


def key_correlation() -> list[float]:
    """The correlation of each learned key with its idealized model at 7x7 (both have mean 0 and norm 1, so it is
    their dot product).

    Example:
        >>> [round(c, 2) for c in key_correlation()]
        [0.84, ...]
    """
    return [float(c) for c in (learned_keys() * idealized_keys(LEARNED_SIZE)).sum((1, 2))]

