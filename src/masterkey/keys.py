"""The 8 universal master key filters: the learned values and the idealized scale-space models.

Babaiee et al. (arXiv 2509.11711) found that nearly every trained depthwise filter is an affine image
``a * f_k + b`` of one of 8 universal 7x7 filters ``f_k``; Lindeberg, Babaiee and Kiasari ("Modelling and analysis of
the 8 filters from the 'master key filters hypothesis' for depthwise-separable deep networks in relation to idealized
receptive fields based on scale-space theory", Journal of Mathematical Imaging and Vision, 2026, arXiv 2509.12746)
model the 8 as idealized discrete scale-space filters. This module ships both sets:

- the **learned** keys: the published 7x7 values (CC BY 4.0, see ``data/master_key_8_filters.txt``);
- the **idealized** keys: rendered from their scale-space definitions at any odd size (3, 5, 7, 9, ...).

Both are normalized to mean 0 and L2 norm 1. The learned keys exist only at 7x7; :func:`keys_for` gives the key set a
kind uses at a size (the learned ones at 7x7, the idealized ones at every other odd size: the learned values are
never resampled, the scale-space models are their size-free form). Fitting filters to them is
:mod:`masterkey.fitting`; injecting them is :mod:`masterkey.universal_injection`.

**Idealized definitions**: the paper's "method B". ``T(n; s) = exp(-s) I_n(s)`` is the discrete analogue of the
Gaussian with ``s = sigma^2``, applied separably; keys 1-6 are minimal difference operators (half-pixel forward or
backward, or centred ``[-1/2, 0, +1/2]``) applied to ``T``, key 7 is ``delta - alpha * Laplacian_5(T)`` (the unit
impulse minus a scaled 5-point Laplacian of ``T``) and key 8 is ``T``: :data:`KEY_MODELS`, :data:`IDEALIZED_SIGMAS`
and :data:`KEY7_ALPHA`. Kernel row ``r`` and column ``c`` of a size-``m`` kernel sit at ``x = c - m // 2`` and
``y = m // 2 - r``, i.e. ``y`` points up, which reproduces the signs of the learned filters except 2 and 3.

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
from .constants import REFERENCE_LICENSE_URL, REFERENCE_LICENSOR, REFERENCE_REPOSITORY
from .errors import FitError

__all__ = [
    "NUM_KEYS",
    "LEARNED_SIZE",
    "KEY_NAMES",
    "KEY_MODELS",
    "IDEALIZED_SIGMAS",
    "KEY7_ALPHA",
    "KEY7_MODELS",
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
KEY_NAMES = ("dy+ T", "dx- T", "dy- T", "dx+ T", "dx T", "dy T", "delta - a Lap T", "T")
#: What each key is, in words.
KEY_MODELS = (
    "forward difference in y of a Gaussian",
    "backward difference in x of a Gaussian",
    "backward difference in y of a Gaussian",
    "forward difference in x of a Gaussian",
    "centred first derivative in x of a Gaussian",
    "centred first derivative in y of a Gaussian",
    "unit impulse minus 0.526 times the 5-point Laplacian of a Gaussian",
    "Gaussian",
)
#: ``(sigma_x, sigma_y)`` of each idealized key: the "method B" estimates of arXiv 2509.12746 at full precision, as
#: the paper's public code returns them (``tonylindeberg/masterfiltmodel``, ``model-fitting/filteranal.py``, CC BY 4.0,
#: Copyright (2026) Tony Lindeberg): keys 1-6 and 8 from ``keyfiltersigmahat(k, 'x' | 'y', 'sepfromdiscvar')``, which
#: method B uses for them; key 7 from ``keyfiltersigmahat(7, 'x', 'l2diffsamescale')``, the scale of the two-parameter
#: (sigma, alpha) fit that method B uses for key 7 (one scale for both directions).
IDEALIZED_SIGMAS = (
    (0.644467181641027, 0.5828832090268337),  # sepfromdiscvar, key 1
    (0.5857839906147607, 0.6439526929438278),  # sepfromdiscvar, key 2
    (0.6898322629693772, 0.6740337546526619),  # sepfromdiscvar, key 3
    (0.756029853407984, 0.4595702668204834),  # sepfromdiscvar, key 4
    (1.1066640009337496, 0.944777139036421),  # sepfromdiscvar, key 5
    (0.9003583091930647, 0.888872322603157),  # sepfromdiscvar, key 6
    (0.6753768844221105, 0.6753768844221105),  # l2diffsamescale, key 7
    (0.6094604392295698, 0.6011991729854481),  # sepfromdiscvar, key 8
)
#: ``alpha`` of key 7, ``delta - alpha * Laplacian_5(T)``: ``keyfilter7alphahat('l2diffsamescale')`` of the same file.
KEY7_ALPHA = 0.5256281407035176
#: The models of key 7 that :func:`idealized_keys` renders: the paper's (the default) and the experiment script's.
KEY7_MODELS = ("paper", "experiment-script")
#: Key 7 as the repository's experiment script renders it (``experiments/modify_models/modify_dwconvs_initial.py``,
#: ``generate_filters(method='B', gamma7=0.5)``): ``T - gamma * Laplacian_5(T)`` at this sigma, with this gamma.
SCRIPT_KEY7_SIGMA = 0.675
SCRIPT_KEY7_GAMMA = 0.5

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
    "attribution": f"{REFERENCE_REPOSITORY} (model-fitting/8Filters.txt), {REFERENCE_LICENSOR}, CC BY 4.0 "
    f"({REFERENCE_LICENSE_URL}). Changes made: none to the values, stored as float32.",
}
_IDEALIZED_INFO = {
    "source_model": "idealized-scale-space",
    "source_weights": "rendered by masterkey from the scale-space models of arXiv:2509.12746 (method B), with the "
    "sigma and alpha values of tonylindeberg/masterfiltmodel (model-fitting/filteranal.py)",
    "source_license": "CC-BY-4.0",
    "description": "The 8 universal master key filters as idealized discrete scale-space filters (Lindeberg, Babaiee, "
    "Kiasari, JMIV 2026, arXiv:2509.12746, method B), rendered at {size}x{size}, mean 0 and L2 norm 1.",
    "attribution": f"sigma and alpha from {REFERENCE_REPOSITORY} (model-fitting/filteranal.py), {REFERENCE_LICENSOR}, "
    f"CC BY 4.0 ({REFERENCE_LICENSE_URL}). Changes made: the models are rendered by masterkey from the paper's "
    "formulas at this size, then centred to mean 0 and normalized to L2 norm 1.",
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


def _edge_difference(t: np.ndarray, kind: str) -> np.ndarray:
    """A 1-D difference of the window ``t`` (ordered by increasing coordinate), taken inside the window: the sample
    beyond each end is the edge sample repeated, as in the paper's code (scipy.ndimage's ``reflect`` mode)."""
    e = np.pad(t, 1, mode="edge")
    if kind == "+":  # (delta_+ t)(n) = t(n+1) - t(n)
        return e[2:] - e[1:-1]
    if kind == "-":  # (delta_- t)(n) = t(n) - t(n-1)
        return e[1:-1] - e[:-2]
    return (e[2:] - e[:-2]) / 2  # (delta t)(n) = (t(n+1) - t(n-1)) / 2


def _laplacian5(f: np.ndarray, *, interior_only: bool) -> np.ndarray:
    """The 5-point Laplacian of a window ``f``: zero outside the window (the paper's code), or, with
    ``interior_only``, computed only where all 4 neighbours are inside and zero on the border (the experiment
    script)."""
    e = np.pad(f, 1)
    lap = e[2:, 1:-1] + e[:-2, 1:-1] + e[1:-1, 2:] + e[1:-1, :-2] - 4 * f
    if interior_only:
        lap[[0, -1], :] = 0
        lap[:, [0, -1]] = 0
    return lap


#: The 1-D operator of each key along x and along y: None (T itself), "+", "-" (half-pixel) or "c" (centred).
_OPERATORS = ((None, "+"), ("-", None), (None, "-"), ("+", None), ("c", None), (None, "c"), (None, None), (None, None))


@functools.lru_cache(maxsize=32)
def _render_idealized(size: int, key7: str = "paper", normalize: bool = True) -> torch.Tensor:
    half = size // 2
    n = np.arange(-half, half + 1)  # x (columns) and y (upwards) on the window
    keys = []
    for k, (sigma_x, sigma_y) in enumerate(IDEALIZED_SIGMAS):
        tx, ty = ive(n, sigma_x**2), ive(n, sigma_y**2)  # T(n; s) = exp(-s) I_n(s), s = sigma^2
        if k == 6 and key7 == "paper":  # delta - alpha * Laplacian_5(T)
            delta = np.zeros((size, size))
            delta[half, half] = 1.0
            f = delta - KEY7_ALPHA * _laplacian5(np.outer(ty, tx), interior_only=False)
        elif k == 6:  # the experiment script's T - gamma * Laplacian_5(T)
            t = ive(n, SCRIPT_KEY7_SIGMA**2)
            t = t / t.sum()  # the script normalizes the window of T to sum 1
            f = np.outer(t, t) - SCRIPT_KEY7_GAMMA * _laplacian5(np.outer(t, t), interior_only=True)
        else:
            x_op, y_op = _OPERATORS[k]
            x_factor = tx if x_op is None else _edge_difference(tx, x_op)
            y_factor = ty if y_op is None else _edge_difference(ty, y_op)
            f = np.outer(y_factor, x_factor)  # f[y + half, x + half]
        f = f[::-1]  # rows run top to bottom while y points up
        if normalize:
            f = f - f.mean()
            f = f / np.linalg.norm(f)
        keys.append(f)
    return torch.tensor(np.stack(keys), dtype=torch.float32)


def idealized_keys(size: int = LEARNED_SIZE, *, key7: str = "paper", normalize: bool = True) -> torch.Tensor:
    """The 8 idealized scale-space keys rendered at ``size`` x ``size`` (any odd size >= 3), ``(8, size, size)``
    float32, each normalized to mean 0 and L2 norm 1 after truncation to the window.

    They are the paper's "method B" models (arXiv:2509.12746): :data:`KEY_MODELS` with :data:`IDEALIZED_SIGMAS` and
    :data:`KEY7_ALPHA`, in the paper's code's edge convention: ``T`` is the window of ``exp(-s) I_n(s)``; the
    differences of keys 1-6 are taken inside the window, the sample beyond its edge being the edge sample repeated;
    the Laplacian of key 7 takes ``T`` as zero outside the window. At 7x7 every key matches the paper's code to
    rounding (cosine 1.0000).

    At 5x5 and 3x3 the same formulas are cut to the smaller window, so the edge convention shows: the row (keys 1
    and 3) or column (keys 2 and 4) at the far edge of a half-pixel difference is exactly 0 (at 3x3, a third of the
    kernel), the centred differences of keys 5 and 6 are half the one-sided difference at the edge, and
    key 7 loses the ``T`` beyond the window from its Laplacian. The learned keys exist only at 7x7, so at the
    smaller sizes these renderings are the keys.

    ``key7="experiment-script"`` renders key 7 as the repository's experiment script does
    (``experiments/modify_models/modify_dwconvs_initial.py``, method B with ``gamma7=0.5``):
    ``T - 0.5 * Laplacian_5(T)`` at sigma 0.675, the Laplacian computed only where all 4 neighbours are inside the
    window (zero on its border). That is another model: at 7x7 its cosine with the paper's key 7 is 0.990, with key
    8 0.963 (the paper's key 7: 0.920), and its residual by the paper's measure (``benchmarks/idealized_keys_table.py``)
    0.637, or 0.275 brought to the paper model's mean and norm, against 0.123. At 5x5 the Laplacian is kept on the
    inner 3x3 only (cosine 0.992 with the paper's key 7, 0.966 with key 8), and at 3x3 on the centre pixel only: the
    key is ``T`` with its centre raised by ``0.5 * (4 T(0, 0) - T(1, 0) - T(-1, 0) - T(0, 1) - T(0, -1))`` and its
    other 8 values untouched, nearly the Gaussian (cosine 0.991 with key 8; the paper's key 7: 0.972). The other 7
    keys are the paper's either way.

    ``normalize=False`` returns the models in their own units, before centring and normalising: ``T`` sums to 1
    and each difference responds with 1 to a unit ramp, but for what the window cuts off (key 5, the widest,
    responds with 0.91 at 7x7), and key 7's impulse is 1. The paper compares these with the learned filters scaled
    by their responses (``benchmarks/idealized_keys_table.py``).

    Raises:
        FitError: ``size`` is even or smaller than 3, or ``key7`` is not one of :data:`KEY7_MODELS`.

    Example:
        >>> idealized_keys(5).shape
        torch.Size([8, 5, 5])
        >>> round(idealized_keys(7, normalize=False)[6, 3, 3].item(), 4)  # 1 - alpha * Laplacian at the centre
        1.7277
    """
    if key7 not in KEY7_MODELS:
        raise FitError(f"key7={key7!r} is not a model of key 7; choose one of {', '.join(map(repr, KEY7_MODELS))}.")
    if not isinstance(normalize, bool):
        raise FitError(f"normalize must be True or False, not {normalize!r}.")
    return _render_idealized(_check_size(size), key7, normalize).clone()


def keys_for(kind: str, size: int) -> tuple[torch.Tensor, str]:
    """The keys a ``kind`` uses at ``size`` and their label: the learned ones at 7x7, else the idealized ones.

    Example:
        >>> keys, label = keys_for("learned", 5)  # no learned 5x5 keys: the idealized ones
        >>> label, keys.shape
        ('idealized-5x5', torch.Size([8, 5, 5]))
    """
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
        info.update(
            sigmas=[list(s) for s in IDEALIZED_SIGMAS],
            key7_alpha=KEY7_ALPHA,
            edge_convention="differences inside the window (edge sample repeated); key 7's Laplacian with T = 0 "
            "outside the window",
        )
    return FilterBank.from_tensors({"universal_keys": keys.clone()}, **info)


def key_correlation() -> list[float]:
    """The correlation of each learned key with its idealized model at 7x7 (both have mean 0 and norm 1, so it is
    their dot product).

    Example:
        >>> [round(c, 2) for c in key_correlation()]
        [0.84, ...]
    """
    return [float(c) for c in (learned_keys() * idealized_keys(LEARNED_SIZE)).sum((1, 2))]

