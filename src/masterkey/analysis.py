"""Analysis of a filter bank against the 8 universal keys: per-layer statistics, bank-vs-bank similarity, generality
by depth, and PNG plots (matplotlib, drawn on ``Figure`` objects with the Agg canvas: no pyplot state, no display).

The entry point is :func:`analyze_bank` (CLI: ``masterkey analyze BANK --out DIR [--compare BANK2]``), which writes
``report.json`` and the figures into one folder.

Definitions used throughout:

- **R^2** of a filter: the share of its variance explained by its best affine fit ``a * key_k + b``
  (:func:`masterkey.fit_universal`).
- **chance**: the same statistics for i.i.d. Gaussian filters of the same size (fixed seed), the level reached by
  filters with no structure at all; with 8 keys in the ``k*k - 1`` dimensions of a centred ``k x k`` filter it is
  far from 0 at 3x3.
- **similarity** of two layers: the mean best-match absolute cosine between their centred filters, in both
  directions and averaged (1: every filter of each has a copy, up to scale and sign, in the other); kernels of
  different sizes are compared on the centre crop of the smaller size.
- **key-usage divergence**: the Jensen-Shannon divergence (base 2, from 0 to 1) between the layers' key histograms.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .bank import FilterBank
from .fitting import R2_THRESHOLDS, UniversalFit, fit_universal, key_usage
from .hub import load_master_filters
from .keys import IDEALIZED_SIGMAS, KEY_MODELS, KEY_NAMES, LEARNED_SIZE, idealized_keys, key_correlation, learned_keys

__all__ = [
    "layer_statistics",
    "compare_banks",
    "generality_by_depth",
    "chance_levels",
    "explained_table",
    "plot_layer_filters",
    "plot_keys",
    "plot_key_usage",
    "plot_r2_by_depth",
    "plot_similarity",
    "analyze_bank",
]

_CHANCE_FILTERS = 20_000
_KEY_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


# -- statistics ----------------------------------------------------------------------------------------------------
def layer_statistics(
    bank: FilterBank, *, fit: UniversalFit | None = None, thresholds: Sequence[float] = R2_THRESHOLDS
) -> list[dict[str, Any]]:
    """One JSON-ready dict per layer of ``bank`` in depth order: shape, filter norm and mean (mean and std over the
    channels) and, for fitted layers, the R^2 distribution against the keys and the key usage (``fit`` defaults to
    ``fit_universal(bank)``). Skipped layers (non-square, even) carry ``"fitted": False``.

    Example:
        >>> stats = layer_statistics(masterkey.load_master_filters("imagenet-lite0"))
        >>> stats[0]["r2_mean"], stats[0]["norm_mean"]
    """
    fit = fit_universal(bank) if fit is None else fit
    fitted = {row["name"]: row for row in fit.layer_summaries(thresholds)}
    rows = []
    for spec in bank.specs:
        flat = bank[spec.name].reshape(spec.out_channels, -1).double()
        norms, means = flat.norm(dim=1), flat.mean(dim=1)
        rows.append(
            {
                "name": spec.name,
                "index": spec.index,
                "stage": spec.stage,
                "relative_depth": spec.relative_depth,
                "channels": spec.out_channels,
                "kernel_size": list(spec.kernel_size),
                "stride": list(spec.stride),
                "norm_mean": float(norms.mean()),
                "norm_std": float(norms.std()) if spec.out_channels > 1 else 0.0,
                "mean_mean": float(means.mean()),
                "mean_std": float(means.std()) if spec.out_channels > 1 else 0.0,
                "fitted": spec.name in fitted,
                **{k: v for k, v in fitted.get(spec.name, {}).items() if k not in ("name", "relative_depth")},
            }
        )
    return rows


def _unit_filters(filters: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop to ``size``, centre (mean 0) and scale to norm 1; constant filters become zero vectors."""
    h, w = filters.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    flat = filters.reshape(-1, h, w)[:, top : top + size, left : left + size].reshape(filters.shape[0], -1).double()
    flat = flat - flat.mean(1, keepdim=True)
    norms = flat.norm(dim=1, keepdim=True)
    return torch.where(norms > 1e-12, flat / norms.clamp(min=1e-12), 0.0)


def _best_match(mine: torch.Tensor, theirs: torch.Tensor) -> float:
    """Mean best-match |cosine| of unit filters, averaged over both directions."""
    cos = (mine @ theirs.T).abs()
    return float((cos.max(1).values.mean() + cos.max(0).values.mean()) / 2)


def _js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    p_t, q_t = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
    p_t, q_t = p_t / p_t.sum().clamp(min=1e-12), q_t / q_t.sum().clamp(min=1e-12)
    m = (p_t + q_t) / 2

    def kl(x: torch.Tensor) -> float:
        nz = x > 0
        return float((x[nz] * torch.log2(x[nz] / m[nz])).sum())

    return 0.5 * kl(p_t) + 0.5 * kl(q_t)


def compare_banks(
    bank: FilterBank,
    other: FilterBank,
    *,
    fit: UniversalFit | None = None,
    other_fit: UniversalFit | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Layer-by-layer similarity of ``bank`` to ``other``: each fitted layer of ``bank`` is paired with the fitted
    layer of ``other`` at the nearest relative depth (any two architectures), and gets the mean best-match absolute
    cosine of their filters (see the module docstring), its chance level (the same against as many i.i.d. Gaussian
    filters as the partner has, seeded by ``seed``: best matches among many filters in few dimensions are high even
    by chance) and the Jensen-Shannon divergence of their key usage.

    Example:
        >>> lite0 = masterkey.load_master_filters("imagenet-lite0")
        >>> rows = compare_banks(lite0, masterkey.extract_filters("tf_efficientnet_lite0", pretrained=False))
        >>> [round(r["similarity"], 2) for r in rows][:3]
    """
    fit = fit_universal(bank) if fit is None else fit
    other_fit = fit_universal(other) if other_fit is None else other_fit
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for layer in fit.layers:
        partner = min(other_fit.layers, key=lambda o: abs(o.relative_depth - layer.relative_depth))
        size = min(layer.kernel_size[0], partner.kernel_size[0])
        mine, theirs = _unit_filters(bank[layer.name], size), _unit_filters(other[partner.name], size)
        noise = _unit_filters(torch.randn(theirs.shape[0], size, size, generator=generator), size)
        rows.append(
            {
                "name": layer.name,
                "relative_depth": layer.relative_depth,
                "other": partner.name,
                "other_relative_depth": partner.relative_depth,
                "compared_size": size,
                "similarity": _best_match(mine, theirs),
                "similarity_chance": _best_match(mine, noise),
                "key_usage_divergence": _js_divergence(layer.key_share(), partner.key_share()),
            }
        )
    return rows


def chance_levels(
    sizes: Sequence[int], *, keys: str = "learned", thresholds: Sequence[float] = R2_THRESHOLDS, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """R^2 statistics of i.i.d. Gaussian filters of each square ``size`` (20,000 per size, fixed ``seed``): what the
    8 keys "explain" in filters with no structure, the baseline every share should be read against.

    Example:
        >>> chance_levels([3])["3x3"]["share_r2_at_least"]["0.5"]
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for size in sorted(set(sizes)):
        noise = torch.randn(_CHANCE_FILTERS, size, size, generator=generator)
        summary = fit_universal(noise, keys=keys).summary(thresholds)
        out[f"{size}x{size}"] = {k: summary[k] for k in ("filters", "r2_mean", "r2_median", "share_r2_at_least")}
    return out


def explained_table(bank: FilterBank, *, keys: str = "learned", thresholds: Sequence[float] = R2_THRESHOLDS) -> str:
    """A markdown table of how much of ``bank`` the 8 keys explain, per kernel size: filters, key set, and the share
    of filters with R^2 at or above each threshold, with the chance level (random filters) in parentheses.

    Example:
        >>> print(explained_table(masterkey.load_master_filters("imagenet-lite0")))
        | kernel | filters | keys | R² ≥ 0.5 | R² ≥ 0.7 | R² ≥ 0.9 |
        ...
    """
    summary = fit_universal(bank, keys=keys).summary(thresholds)
    chance = chance_levels(
        [int(size.split("x")[0]) for size in summary["by_kernel_size"]], keys=keys, thresholds=thresholds
    )
    lines = [
        "| kernel | filters | keys | " + " | ".join(f"R² ≥ {t:g}" for t in thresholds) + " |",
        "|---" * (3 + len(thresholds)) + "|",
    ]
    for size, row in summary["by_kernel_size"].items():
        shares = " | ".join(
            f"{row['share_r2_at_least'][f'{t:g}']:.1%} ({chance[size]['share_r2_at_least'][f'{t:g}']:.1%})"
            for t in thresholds
        )
        lines.append(f"| {size} | {row['filters']} | {', '.join(row['keys'])} | {shares} |")
    return "\n".join(lines)


def generality_by_depth(
    fit: UniversalFit, *, bins: int = 3, comparison: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """How universal the filters are at each depth: the fitted layers grouped into ``bins`` equal ranges of
    relative depth (``"early"``, ``"middle"``, ``"late"`` for 3), each with its filter count, mean R^2, shares of
    R^2 >= 0.5 and >= 0.9, the normalized entropy of its key usage (1: all 8 keys used equally) and, given a
    :func:`compare_banks` result, the mean similarity and key-usage divergence of its layers.

    Example:
        >>> for row in generality_by_depth(masterkey.fit_universal(bank)):
        ...     print(row["depth"], round(row["r2_mean"], 2))
    """
    names = ("early", "middle", "late") if bins == 3 else None
    by_name = {row["name"]: row for row in comparison or ()}
    out = []
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        layers = [
            lay for lay in fit.layers if lo <= lay.relative_depth < hi or (i == bins - 1 and lay.relative_depth == 1)
        ]
        if not layers:
            continue
        r2 = torch.cat([lay.r2 for lay in layers])
        key = torch.cat([lay.key for lay in layers])
        share = key_usage(key, fit.num_keys).double()
        share = share / share.sum().clamp(min=1)
        entropy = -float((share[share > 0] * share[share > 0].log2()).sum()) / math.log2(fit.num_keys)
        row = {
            "depth": names[i] if names else f"{lo:.2f}-{hi:.2f}",
            "relative_depth": [lo, hi],
            "layers": len(layers),
            "filters": r2.numel(),
            "r2_mean": float(r2.mean()),
            "share_r2_at_least": {"0.5": float((r2 >= 0.5).float().mean()), "0.9": float((r2 >= 0.9).float().mean())},
            "key_usage_entropy": entropy,
            "dominant_key": int(share.argmax()) + 1,
        }
        compared = [by_name[lay.name] for lay in layers if lay.name in by_name]
        if compared:
            row["similarity"] = sum(c["similarity"] for c in compared) / len(compared)
            row["key_usage_divergence"] = sum(c["key_usage_divergence"] for c in compared) / len(compared)
        out.append(row)
    return out


# -- plots ---------------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    try:  # matplotlib is the optional 'analysis' extra: the statistics above work without it
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("Plots need matplotlib: pip install 'masterkey[analysis]'.") from None
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)  # a bare Figure draws with the Agg canvas
    return path


def plot_layer_filters(
    bank: FilterBank,
    name: str,
    path: str | Path,
    *,
    fit: UniversalFit | None = None,
    max_filters: int = 32,
    normalize: bool = True,
) -> Path:
    """A grid of the first ``max_filters`` filters of layer ``name`` on one symmetric colour scale, each titled with
    its channel and, when the layer was fitted, its best key and R^2. With ``normalize`` each filter is divided by
    its largest absolute weight, so that shapes stay visible when the norms differ widely.

    Example:
        >>> plot_layer_filters(bank, bank.names[0], "filters.png")
    """
    filters = bank[name][:max_filters, 0]
    if normalize:
        filters = filters / filters.abs().amax((1, 2), keepdim=True).clamp(min=1e-12)
    n = filters.shape[0]
    cols = min(8, n)
    rows = math.ceil(n / cols)
    layer = next((lay for lay in fit.layers if lay.name == name), None) if fit is not None else None
    fig = _figure(1.2 * cols + 1.2, 1.3 * rows + 1.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(filters.abs().max()) or 1.0
    image = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        image = ax.imshow(filters[i].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        label = f"ch {i}"
        if layer is not None:
            k = int(layer.key[i])
            # a constant filter is b alone: no key, and its exact fit says nothing
            label += f"\nkey {k + 1}, R²={float(layer.r2[i]):.2f}" if k >= 0 else "\nconstant (no key)"
        ax.set_title(label, fontsize=8)
    spec = bank.spec(name)
    source = bank.config.get("source_model") or "bank"
    fig.suptitle(
        f"{source}: {name} ({spec.out_channels} filters, {spec.kernel_size[0]}x{spec.kernel_size[1]}), first {n}",
        fontsize=10,
    )
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight / max |weight|" if normalize else "weight")
    if layer is not None:
        used = sorted({int(k) for k in layer.key[:n] if k >= 0})
        fig.supxlabel(_key_legend(used), fontsize=7, wrap=True)  # laid out below the grid, never over it
    return _save(fig, path)


def _key_legend(keys: Sequence[int]) -> str:
    """The keys' names in words, for a figure's caption: ``key 8 = T: Gaussian``."""
    return "; ".join(f"key {k + 1} = {KEY_NAMES[k]}: {KEY_MODELS[k]}" for k in keys)


def plot_keys(path: str | Path) -> Path:
    """The 8 keys, learned (top row) beside idealized (bottom row, 7x7), with each pair's correlation.

    Example:
        >>> plot_keys("keys.png")
    """
    learned, ideal = learned_keys(), idealized_keys(LEARNED_SIZE)
    corr = key_correlation()
    fig = _figure(13.5, 4.2)
    axes = fig.subplots(2, 8, squeeze=False)
    vmax = float(torch.cat([learned, ideal]).abs().max())
    image = None
    for k in range(8):
        for row, (keys, label) in enumerate(((learned, "learned"), (ideal, "idealized"))):
            ax = axes[row, k]
            image = ax.imshow(keys[k].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{k + 1}: {KEY_NAMES[k]}", fontsize=10)
            else:
                sx, sy = IDEALIZED_SIGMAS[k]
                ax.set_title(f"r = {float(corr[k]):+.2f}\nσ = ({sx:.3f}, {sy:.3f})", fontsize=9)
            if k == 0:
                ax.set_ylabel(label, fontsize=11)
    fig.suptitle(
        "The 8 universal master key filters: learned (ConvNeXt-V2 Tiny, arXiv:2509.11711, CC BY 4.0) "
        "vs idealized scale-space models (arXiv:2509.12746); r = correlation",
        fontsize=10,
    )
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight (mean 0, L2 norm 1)")
    return _save(fig, path)


def _layer_ticks(ax: Any, fit: UniversalFit) -> None:
    positions = range(len(fit.layers))
    ax.set_xlim(-0.6, len(fit.layers) - 0.4)
    if len(fit.layers) <= 24:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(
            [
                f"{i}\n{lay.kernel_size[0]}x{lay.kernel_size[1]}"
                + (f"\ns{lay.stride[0]}" if max(lay.stride) > 1 else "")
                for i, lay in enumerate(fit.layers)
            ],
            fontsize=8,
        )
    ax.set_xlabel("depthwise layer, input to output (index, kernel size, stride when > 1)")


def plot_key_usage(fit: UniversalFit, path: str | Path, *, title: str = "") -> Path:
    """Stacked bars: the share of each layer's filters that take each key, layers in depth order.

    Example:
        >>> plot_key_usage(masterkey.fit_universal(bank), "key_usage.png")
    """
    fig = _figure(max(8.0, 0.45 * len(fit.layers) + 2.0), 6.0)
    ax = fig.subplots()
    shares = torch.tensor([layer.key_share(fit.num_keys) for layer in fit.layers])
    bottom = torch.zeros(len(fit.layers))
    for k in range(fit.num_keys):
        ax.bar(
            range(len(fit.layers)),
            shares[:, k],
            bottom=bottom,
            color=_KEY_COLORS[k % 8],
            label=f"{k + 1}: {KEY_NAMES[k]} ({KEY_MODELS[k]})",
        )
        bottom += shares[:, k]
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the layer's filters")
    _layer_ticks(ax, fit)
    # below the axes: the keys' names in words would squeeze the bars to half the width beside them
    fig.legend(*ax.get_legend_handles_labels(), title="best key", loc="outside lower center", ncol=2, fontsize=8)
    ax.set_title(title or "Key usage against depth", fontsize=11)
    return _save(fig, path)


def plot_r2_by_depth(
    fit: UniversalFit, path: str | Path, *, chance: dict[str, dict[str, Any]] | None = None, title: str = ""
) -> Path:
    """R^2 against depth: a box plot per layer (whiskers 5-95%) with the chance level of its kernel size, and below
    the share of each layer's filters above each R^2 threshold.

    Example:
        >>> plot_r2_by_depth(masterkey.fit_universal(bank), "r2.png")
    """
    fig = _figure(max(7.0, 0.45 * len(fit.layers) + 2.5), 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.boxplot(
        [lay.r2.numpy() for lay in fit.layers], positions=list(range(len(fit.layers))), whis=(5, 95), showfliers=False
    )
    if chance:
        levels = [chance[f"{lay.kernel_size[0]}x{lay.kernel_size[1]}"]["r2_mean"] for lay in fit.layers]
        top.plot(range(len(levels)), levels, "x", color="grey", label="mean R² of random filters (chance)")
        top.legend(loc="lower right", fontsize=8)
    top.set_ylim(0, 1.02)
    top.set_ylabel("R² of the best affine fit")
    top.set_title(title or "How well the 8 keys explain each layer", fontsize=11)
    for t in R2_THRESHOLDS:
        shares = [float((lay.r2 >= t).float().mean()) for lay in fit.layers]
        bottom.plot(range(len(shares)), shares, "o-", label=f"R² ≥ {t:g}")
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("share of filters")
    bottom.legend(loc="upper right", fontsize=8, ncol=len(R2_THRESHOLDS))
    _layer_ticks(bottom, fit)
    return _save(fig, path)


def plot_similarity(
    comparison: Sequence[dict[str, Any]], path: str | Path, *, labels: tuple[str, str] = ("bank", "other")
) -> Path:
    """Two banks' similarity against depth: mean best-match |cosine| (top) and key-usage divergence (bottom).

    Example:
        >>> plot_similarity(compare_banks(bank, other), "similarity.png", labels=("lite0 ImageNet", "lite0 random"))
    """
    fig = _figure(7.5, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    depth = [row["relative_depth"] for row in comparison]
    top.plot(depth, [row["similarity"] for row in comparison], "o-", color="#1f77b4", label=f"{labels[1]}")
    top.plot(
        depth, [row["similarity_chance"] for row in comparison], "x--", color="grey", label="random filters (chance)"
    )
    top.set_ylim(0, 1.02)
    top.set_ylabel("mean best-match |cos|")
    top.legend(loc="lower right", fontsize=8)
    top.set_title(f"{labels[0]}\nvs {labels[1]}, layer by layer (nearest relative depth)", fontsize=11)
    bottom.plot(depth, [row["key_usage_divergence"] for row in comparison], "s-", color="#d62728")
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("key-usage JS divergence")
    bottom.set_xlabel(f"relative depth in {labels[0]} (0 = first depthwise conv, 1 = last)")
    bottom.set_xlim(-0.03, 1.03)
    return _save(fig, path)


# -- everything at once --------------------------------------------------------------------------------------------
def _label(bank: FilterBank) -> str:
    cfg = bank.config
    return " ".join(str(v) for v in (cfg.get("source_model"), cfg.get("source_dataset")) if v) or "bank"


def analyze_bank(
    bank: FilterBank | str | Path,
    *,
    out_dir: str | Path,
    compare: FilterBank | str | Path | None = None,
    keys: str = "learned",
) -> dict[str, Any]:
    """Analyze a bank against the 8 universal keys and write ``report.json`` and PNG figures into ``out_dir``.

    ``bank`` and ``compare`` may be :class:`FilterBank` objects or anything :func:`masterkey.load_master_filters`
    takes (a folder, a Hub id, or a built-in name such as ``"imagenet-lite0"`` or ``"universal-learned-8"``). Figures:
    ``keys.png`` (learned beside idealized), ``key_usage.png``, ``r2_by_depth.png``, ``filters_first.png`` and
    ``filters_last.png`` (grids of the first and last fitted layer) and, with ``compare``, ``similarity.png``.

    Returns:
        The report: the fit's ``summary``, ``chance`` levels per kernel size, per-layer ``layers`` statistics,
        ``generality_by_depth``, the learned-vs-idealized ``key_correlation``, ``comparison`` rows (or ``None``)
        and the ``figures`` written.

    Example:
        >>> report = masterkey.analyze_bank("imagenet-lite0", out_dir="analysis/lite0")
        >>> report["summary"]["by_kernel_size"]["3x3"]["share_r2_at_least"]
    """
    bank = bank if isinstance(bank, FilterBank) else load_master_filters(bank)
    other = compare if compare is None or isinstance(compare, FilterBank) else load_master_filters(compare)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit = fit_universal(bank, keys=keys)
    chance = chance_levels([lay.kernel_size[0] for lay in fit.layers], keys=keys)
    comparison = None
    figures = [
        plot_keys(out / "keys.png"),
        plot_key_usage(fit, out / "key_usage.png", title=f"Key usage against depth: {_label(bank)}"),
        plot_r2_by_depth(fit, out / "r2_by_depth.png", chance=chance, title=f"R² against depth: {_label(bank)}"),
        plot_layer_filters(bank, fit.layers[0].name, out / "filters_first.png", fit=fit),
    ]
    if len(fit.layers) > 1:
        figures.append(plot_layer_filters(bank, fit.layers[-1].name, out / "filters_last.png", fit=fit))
    if other is not None:
        comparison = compare_banks(bank, other, fit=fit, other_fit=fit_universal(other, keys=keys))
        figures.append(plot_similarity(comparison, out / "similarity.png", labels=(_label(bank), _label(other))))
    report = {
        "bank": repr(bank),
        "source_model": bank.config.get("source_model"),
        "keys": keys,
        "compared_with": None if other is None else repr(other),
        "summary": fit.summary(),
        "chance": chance,
        "generality_by_depth": generality_by_depth(fit, comparison=comparison),
        "key_correlation": key_correlation(),
        "layers": layer_statistics(bank, fit=fit),
        "comparison": comparison,
        "figures": [f.name for f in figures],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
