"""Intervals of paired differences, the one computation behind every table of the research wing: per seed, or over
source networks where the runs' filters came from several."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

_logger = logging.getLogger(__name__)

__all__ = ["paired_difference", "source_clusters"]


def paired_difference(differences: Sequence[float], *, clusters: Sequence[Any] | None = None,
                      level: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """Paired differences (one per seed) summed up: their mean and ``1 - level`` t interval (the mean itself with one
    pair), the two-sided p-value, how many pairs, and ``real`` when the interval excludes 0 (never with one pair).

    With ``clusters`` (one label per difference: the source network each run's filters came from), the differences
    are averaged within each source first and the interval is a t interval over those source means (S - 1 degrees of
    freedom): the exact interval of a balanced random-intercept model, so variation between source networks is inside
    it. ``sources`` says how many there were (1: the interval spans seeds only).

    Example:
        >>> paired_difference([0.02, 0.01, 0.03, 0.02], clusters=[7, 7, 8, 8])["sources"]
        2
    """
    values = np.asarray(differences, dtype=float)
    out: dict[str, Any] = {"pairs": len(values)}
    if clusters is not None:
        labels = list(dict.fromkeys(clusters))
        out["sources"] = len(labels)
        if len(labels) > 1:  # one value per source network: the unit that was sampled
            values = np.array([values[[c == label for c in clusters]].mean() for label in labels])
    mean = low = high = float(values.mean())
    p = 1.0
    if len(values) > 1:
        sd = float(values.std(ddof=1))
        half = float(scipy_stats.t.ppf(1 - level / 2, len(values) - 1) * sd / math.sqrt(len(values)))
        low, high = mean - half, mean + half
        if sd > 0:
            p = float(2 * scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(len(values))), len(values) - 1))
        elif mean != 0:
            p = 0.0
    return {"mean": mean, "low": low, "high": high, **out, "p": p,
            "real": bool(len(values) > 1 and (low > 0 or high < 0))}  # fmt: skip


def source_clusters(pairs: Sequence[Sequence[Mapping[str, Any] | None]]) -> list[Any] | None:
    """The source network each pair of runs depends on (its first run's ``source_seed``, else the second's), as
    :func:`paired_difference` takes ``clusters``; ``None`` when no run of them names one.

    Example:
        >>> source_clusters([({"source_seed": 7}, {}), ({"source_seed": 8}, {})])
        [7, 8]
    """
    sources = [next((r["source_seed"] for r in pair if r is not None and r.get("source_seed") is not None), None)
               for pair in pairs]  # fmt: skip
    return None if all(s is None for s in sources) else sources
