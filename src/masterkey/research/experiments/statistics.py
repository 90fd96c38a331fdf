"""The numbers of a grid: whether each run learned and converged, per-cell summaries, and paired differences with their
intervals."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...training import BuiltinDataset, RunResults
from ..intervals import paired_difference, source_clusters

_logger = logging.getLogger(__name__)


#: A run learned when its final train loss is below this share of chance's loss ln K ...
LEARNED_LOSS_SHARE = 0.8


#: ... and its accuracy lies this many binomial standard errors above chance (1 / K).
LEARNED_SIGMAS = 3.0


#: A run converged when its accuracy rose by less than this over its last two epochs.
CONVERGED_RISE = 0.01


def learning_check(result: RunResults | Mapping[str, Any]) -> dict[str, Any]:
    """Whether a training run (its :class:`~masterkey.training.RunResults`, or its ``results.json`` content) learned
    and converged, with the numbers it was judged on.

    It **learned** when its final train loss is below ``LEARNED_LOSS_SHARE * ln K`` (chance's loss) and its accuracy
    is ``LEARNED_SIGMAS`` binomial standard errors above chance ``1/K``; it **converged** when its accuracy rose by
    less than ``CONVERGED_RISE`` over its last two epochs (``None`` with a single epoch: unknown).

    Example:
        >>> learning_check(train_transfer(...))
        {'chance': 0.1, 'chance_loss': 2.302..., 'learned': True, 'converged': False, ...}
    """
    run = RunResults.from_dict(result)
    chance, chance_loss = 1.0 / run.num_labels, math.log(run.num_labels)
    history = [a for a in run.accuracy_history if a is not None]
    margin = LEARNED_SIGMAS * math.sqrt(chance * (1 - chance) / run.num_eval)
    learned = bool(run.final.train_loss < LEARNED_LOSS_SHARE * chance_loss and run.final.accuracy > chance + margin)
    rise = history[-1] - history[-3] if len(history) >= 3 else (history[-1] - history[0] if len(history) == 2 else None)
    return {"chance": chance, "chance_loss": chance_loss, "learned": learned,
            "converged": None if rise is None else bool(rise < CONVERGED_RISE), "last_rise": rise}  # fmt: skip


def summarize(
    records: Sequence[dict[str, Any]], *, chance: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Per (group, label), in first-seen order: accuracy mean, standard deviation (ddof=1) and count; how many runs
    learned and converged (:func:`learning_check`); chance (recorded, else from ``chance``: dataset -> 1/K); and,
    beside the from-scratch cell of the same dataset and model, the paired difference to it (same seed: same initial
    weights and data order), its mean and 95% interval, ``real`` when the interval excludes 0.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> row = summarize(read_results("docs/experiments/transfer-matrix/results.json")["runs"])[0]
        >>> row["group"], row["label"], round(row["mean"], 3)
        ('digits', 'from scratch', 0.977)
    """
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["group"], r["label"]), []).append(r)
    def pair(row: Mapping[str, Any]) -> tuple[str, ...]:  # the from-scratch cell a cell is compared with
        return (row["dataset"], row["model"], row.get("pair", ""))

    scratch = {pair(rows[0]): {r["seed"]: r for r in rows}
               for rows in cells.values() if rows[0]["filters"] == "none"}  # fmt: skip
    summary = []
    for (group, label), rows in cells.items():
        acc = np.array([r["accuracy"] for r in rows], dtype=float)
        row = {
            "group": group, "label": label, "x": rows[0]["x"], "filters": rows[0]["filters"], "n": len(rows),
            "dataset": rows[0]["dataset"], "model": rows[0]["model"], "pair": rows[0].get("pair", ""),
            "mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "seeds": [r["seed"] for r in rows],
            "chance": rows[0].get("chance") or (chance or {}).get(rows[0]["dataset"]),
            "learned": sum(bool(r.get("learned")) for r in rows) if "learned" in rows[0] else None,
            "converged": sum(bool(r.get("converged")) for r in rows) if rows[0].get("converged") is not None else None,
        }  # fmt: skip
        if "exploratory" in rows[0]:  # under an analysis plan: runs of seeds or cells it does not name
            row["exploratory"] = any(r["exploratory"] for r in rows)
        base = scratch.get(pair(rows[0]), {})
        pairs = [(r, base[r["seed"]]) for r in rows if r["seed"] in base]
        if rows[0]["filters"] != "none" and pairs:
            row["vs_scratch"] = paired_difference([a["accuracy"] - b["accuracy"] for a, b in pairs],
                                                  clusters=source_clusters(pairs))  # fmt: skip
        summary.append(row)
    return summary


def paired_contrasts(records: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[Sequence[str]]]) -> list[dict[str, Any]]:
    """Cell A minus cell B for each ``[[group_a, label_a], [group_b, label_b]]`` of ``pairs``, paired by seed (the
    same seed: the same initial weights and data order), as :func:`summarize` does against from scratch: the mean,
    its 95% interval (over source networks where the runs name several: :func:`paired_difference`), how many seeds
    both cells have, and ``real`` when the interval excludes 0. A pair whose cells share no seed is left out.

    Example:
        >>> paired_contrasts(results["runs"], [[["AnB depthwise", "n=16"], ["AnB pointwise", "n=16"]]])
        [{'a': 'AnB depthwise, n=16', 'b': 'AnB pointwise, n=16', 'mean': 0.212, 'low': -0.182, ...}]
    """
    runs: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in records:
        runs.setdefault((r["group"], r["label"]), {})[r["seed"]] = r
    out = []
    for a, b in pairs:
        cell_a, cell_b = runs.get(tuple(a), {}), runs.get(tuple(b), {})
        matched = [(cell_a[s], cell_b[s]) for s in sorted(set(cell_a) & set(cell_b))]
        if not matched:
            continue
        out.append({"a": ", ".join(a), "b": ", ".join(b),
                    **paired_difference([x["accuracy"] - y["accuracy"] for x, y in matched],
                                        clusters=source_clusters(matched))})  # fmt: skip
    return out


def _chance_levels(records: Sequence[dict[str, Any]], datasets: Mapping[str, BuiltinDataset]) -> dict[str, float]:
    """``1 / number of classes`` of every dataset in ``records`` (recorded per run; older results fall back on the
    built-in datasets, the experiment's own class halves included)."""
    levels = {}
    for r in records:
        classes = r.get("num_labels")
        if classes is None and r["dataset"] in datasets:
            classes = len(datasets[r["dataset"]].class_names)
        if classes:
            levels[r["dataset"]] = 1.0 / classes
    return levels


def steps_to_reach(history: Sequence[float | None], total_steps: int, target: float, *,
                   chance: float = 0.0) -> float | None:  # fmt: skip
    """The training step at which a run's accuracy first reached ``target``, linearly interpolated between the ends of
    its epochs (``history``: accuracy after each epoch, over ``total_steps`` steps in all; before the first step the
    accuracy is taken as ``chance``); ``None`` when it never did.

    Example:
        >>> round(steps_to_reach([0.5, 0.8, 0.9], 300, 0.85), 6)  # halfway through the third epoch
        250.0
    """
    per_epoch = total_steps / max(len(history), 1)
    previous_step, previous = 0.0, chance
    for i, accuracy in enumerate(history):
        if accuracy is None:
            continue
        step = (i + 1) * per_epoch
        if accuracy >= target:
            if accuracy == previous:
                return step
            return previous_step + max(0.0, target - previous) / (accuracy - previous) * (step - previous_step)
        previous_step, previous = step, accuracy
    return None


def time_to_reach(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a practitioner weighs: for each cell beside a from-scratch cell (the pairing of :func:`summarize`), the
    training (in epochs, in steps where the records hold them, and in seconds) each run needs to reach the accuracy
    from scratch ends at with the same seed, and that as a share of what from scratch itself needs to first reach it
    (paired by seed; the interval over seeds, or over source networks where the runs name several). A pair trains the
    same epochs of the same data in batches of one size, so the share is the same counted in epochs or in steps; runs
    recorded before their step counts were (no ``steps``) are measured in epochs. Runs that never reach it are counted,
    not averaged. From the per-epoch accuracies in the records (``history``, ``train_time_s``, ``steps``); cells
    without them are left out.

    Example:
        >>> time_to_reach(results["runs"])[0]
        {'group': 'animal-mnist', 'label': 'imagenet-lite0 (frozen)', 'reached': 5, 'n': 5, 'epochs_mean': 3.1, ...}
    """
    def usable(r: Mapping[str, Any]) -> bool:
        return bool(r.get("history")) and r["history"][-1] is not None

    def pair(r: Mapping[str, Any]) -> tuple[str, ...]:
        return (r["dataset"], r["model"], r.get("pair", ""))

    scratch: dict[tuple[str, ...], dict[int, Mapping[str, Any]]] = {}
    for r in records:
        if r["filters"] == "none" and usable(r):
            scratch.setdefault(pair(r), {})[r["seed"]] = r
    cells: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r["filters"] != "none" and usable(r) and r["seed"] in scratch.get(pair(r), {}):
            cells.setdefault((r["group"], r["label"]), []).append(r)
    out = []
    for (group, label), rows in cells.items():
        epochs, steps, seconds, shares, pairs = [], [], [], [], []
        for r in rows:
            base = scratch[pair(r)][r["seed"]]
            target, chance = base["history"][-1], float(r.get("chance") or 0.0)
            own = steps_to_reach(r["history"], len(r["history"]), target, chance=chance)  # in epochs
            reference = steps_to_reach(base["history"], len(base["history"]), target, chance=chance)
            if own is None or not reference:
                continue
            epochs.append(own)
            fraction = own / len(r["history"])  # of the run's training
            steps.append(fraction * r["steps"] if r.get("steps") else None)
            seconds.append(r["train_time_s"] * fraction)
            shares.append(own / reference)
            pairs.append((r, base))
        row: dict[str, Any] = {"group": group, "label": label, "reached": len(epochs), "n": len(rows)}
        if epochs:
            row.update(epochs_mean=float(np.mean(epochs)),
                       steps_mean=float(np.mean(steps)) if None not in steps else None,
                       seconds_mean=float(np.mean(seconds)),
                       share_of_scratch=paired_difference(shares, clusters=source_clusters(pairs)))  # fmt: skip
        out.append(row)
    return out
