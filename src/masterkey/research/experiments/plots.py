"""The plots of a grid: the cells against their x axis (or grouped bars) and the learning curves."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...training import BUILTIN_DATASETS
from .config import TUNING_EXPERIMENTS
from .layer_split import split_classes
from .results import read_results
from .statistics import _chance_levels

_logger = logging.getLogger(__name__)


#: Words for the x axis of each experiment's plot.
_X_LABELS = {
    "regime": "training epochs (from scratch; validation split held out of the training data)",
    "lr-sweep": "AdamW learning rate (validation split held out of the training data)",
    "transfer-matrix": "target dataset",
    "across-architectures": "target architecture (timm)",
    "cross-family": "target architecture (timm)",
    "layer-split": "first n depthwise (or pointwise) layers copied from the network trained on A or B, frozen",
    "source-size": "share of the source dataset's training images the bank was trained on",
}


def _plot(experiment: str, model: str, summary: Sequence[dict[str, Any]], path: Path, *,
          chance: Mapping[str, float]) -> None:  # fmt: skip
    # matplotlib is the optional 'analysis' extra: only the plot needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(r["group"] for r in summary))
    fig = Figure(figsize=(10, 6.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # the pilot and the sweep draw every cell as a curve; the others draw from-scratch cells as reference lines
    tuning = experiment in TUNING_EXPERIMENTS
    scratch = {} if tuning else {r["group"]: r for r in summary if r["filters"] == "none"}
    # cells without an x beside curves (source-size's controls) are reference lines, as from scratch is
    references = [r for r in summary if r["x"] is None] if any(r["x"] is not None for r in summary) else []
    summary_x = [r for r in summary if r["x"] is not None]
    if summary_x:  # curves against x, the from-scratch cells as reference lines
        curves = [g for g in groups if any(r["group"] == g and (tuning or r["filters"] != "none") for r in summary_x)]
        xs_all = sorted({r["x"] for r in summary_x})
        step = min((b - a for a, b in zip(xs_all, xs_all[1:])), default=1.0)
        for i, group in enumerate(curves):
            rows = [r for r in summary_x if r["group"] == group and (tuning or r["filters"] != "none")]
            offset = 0.0 if tuning else (i - (len(curves) - 1) / 2) * 0.06 * step  # error bars stay readable
            ax.errorbar([r["x"] + offset for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                        marker="o", capsize=3,
                        label=f"frozen bank, trained on that share, on {group}" if experiment == "source-size" else group)  # fmt: skip
        for row in scratch.values():
            ax.axhline(row["mean"], color="black", linestyle="--", linewidth=1,
                       label=f"from scratch ({row['dataset']}): {row['mean']:.3f} ± {row['std']:.3f}")  # fmt: skip
            ax.axhspan(row["mean"] - row["std"], row["mean"] + row["std"], color="black", alpha=0.06)
        for i, row in enumerate(references):
            ax.axhline(row["mean"], color=f"C{len(curves) + i}", linestyle="-.", linewidth=1,
                       label=f"{row['label']} ({row['dataset']}): {row['mean']:.3f} ± {row['std']:.3f}")  # fmt: skip
    else:  # grouped bars: one group per target, one bar per source, the value written on each bar
        labels = list(dict.fromkeys(r["label"] for r in summary))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            rows = {r["group"]: r for r in summary if r["label"] == label}
            xs = [g + i * width for g, name in enumerate(groups) if name in rows]
            values = [rows[n]["mean"] for n in groups if n in rows]
            bars = ax.bar(xs, values, width, yerr=[rows[n]["std"] for n in groups if n in rows], capsize=2,
                          label=label)  # fmt: skip
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
        for g, name in enumerate(groups):
            left, right = g - width / 2, g + 0.8 - width / 2
            if name in scratch:
                ax.hlines(scratch[name]["mean"], left, right, colors="black", linestyles="--", linewidth=1,
                          label="from scratch (same target)" if g == 0 else None)  # fmt: skip
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    levels = sorted(set(chance[r["dataset"]] for r in summary if r["dataset"] in chance))
    for i, level in enumerate(levels):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1.2, label="chance (1 / classes)" if i == 0 else None)
    bottom = min([*levels, *(r["mean"] - r["std"] for r in summary)]) if levels else 0.0
    ax.set_ylim(max(0.0, bottom - 0.05), min(1.0, max(r["mean"] + r["std"] for r in summary) + 0.08))
    if experiment == "lr-sweep":
        ax.set_xscale("log")
    ax.set_xlabel(_X_LABELS.get(experiment, "cell"))
    ax.set_ylabel(f"{'validation' if tuning else 'test'} accuracy of the trained model (mean ± std over seeds)")
    families = experiment in ("across-architectures", "cross-family")
    ax.set_title(f"{experiment}: {model if not families else 'target families'}")
    ax.grid(alpha=0.3)
    # below the axes: long labels (Hub ids) never squeeze the plot
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    fig.savefig(path, dpi=110)


def plot_learning_curves(records: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Test accuracy after each epoch, mean and min-max band over seeds, one panel per group and one curve per arm:
    does a frozen bank only speed training up, or does it still lead once scratch has converged? ``None`` when the
    runs recorded no per-epoch history (results written before it was kept).

    Example:
        >>> runs = read_results("docs/experiments/transfer-matrix/results.json")["runs"]
        >>> plot_learning_curves(runs, Path("outputs/curves.png"), title="transfer matrix")
        PosixPath('outputs/curves.png')
    """
    rows = [r for r in records if len(r.get("history") or []) > 1]
    if not rows:
        return None
    # matplotlib is the optional 'analysis' extra: only the plot needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig = Figure(figsize=(5.5 * len(groups), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, group in zip(axes, groups):
        for label in dict.fromkeys(r["label"] for r in rows if r["group"] == group):
            curves = np.array([r["history"] for r in rows if r["group"] == group and r["label"] == label], dtype=float)
            epochs = np.arange(1, curves.shape[1] + 1)
            (line,) = ax.plot(epochs, curves.mean(0), marker="o", label=label)
            ax.fill_between(epochs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        chance = next((r.get("chance") for r in rows if r["group"] == group and r.get("chance")), None)
        if chance:
            ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_title(group)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (mean, band: min-max over seeds)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def replot(folder: str | Path) -> Path:
    """Draw an experiment's plot again from the ``results.json`` in ``folder`` (no training); returns the PNG.

    Example:
        >>> replot("docs/experiments/transfer-matrix")
    """
    folder = Path(folder)
    data = read_results(folder / "results.json")
    path = folder / f"{data['experiment']}.png"
    _plot(data["experiment"], data["model"], data["summary"], path, chance=results_chance(data))
    return path


def results_chance(data: Mapping[str, Any]) -> dict[str, float]:
    """Chance (1 / classes) of every dataset an experiment's ``results.json`` content trained on, its own class halves
    (layer-split) included.

    Example:
        >>> results_chance(read_results("docs/experiments/layer-split/results.json"))
        {'animal-mnist-B': 0.2, ...}
    """
    datasets = dict(BUILTIN_DATASETS)
    if data["experiment"] == "layer-split":
        datasets.update({half.name: half for half in split_classes(data["details"]["halves"][0].rsplit("-", 1)[0])})
    return _chance_levels(data["runs"], datasets)
