"""The Markdown tables of a grid's results: cells, paired contrasts and the plan's primary contrasts."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..plans import AnalysisPlan

_logger = logging.getLogger(__name__)


def format_difference(difference: Mapping[str, Any] | None) -> str:
    """A :func:`paired_difference` as ``+0.021 [+0.003, +0.040]``, bold where it is real; empty for ``None``."""
    if difference is None:
        return ""
    text = f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
    return f"**{text}**" if difference["real"] else text


def _pairs(row: Mapping[str, Any]) -> str:
    """How many seeds a contrast pairs, and over how many source networks its interval runs where the runs named
    several (:func:`masterkey.research.intervals.paired_difference`)."""
    sources = row.get("sources")
    return f"{row['pairs']} ({sources} source networks)" if sources and sources > 1 else str(row["pairs"])


def contrast_table(contrasts: Sequence[Mapping[str, Any]]) -> str:
    """:func:`paired_contrasts` as a Markdown table (the interval bold where it excludes 0); empty without any."""
    if not contrasts:
        return ""
    lines = ["| cell A | minus cell B | Δ (A − B), 95% CI | seeds |", "|---|---|---|---|"]
    for c in contrasts:
        b = f"{c['b']} (exploratory)" if c.get("exploratory") else c["b"]
        lines.append(f"| {c['a']} | {b} | {format_difference(c)} | {_pairs(c)} |")
    return "\n".join(lines)


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table: accuracy as mean ± std over seeds, the paired difference to from-scratch with
    its 95% interval (bold where it excludes 0), chance, and how many seeds learned (:func:`learning_check`)."""
    lines = ["| group | filters | accuracy (mean ± std) | Δ vs scratch, 95% CI | chance | learned | seeds |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in summary:
        delta = format_difference(row.get("vs_scratch"))
        chance = "" if row.get("chance") is None else f"{row['chance']:.2f}"
        learned = "n/a" if row.get("learned") is None else f"{row['learned']}/{row['n']}"
        if row.get("learned") is not None and row["learned"] < row["n"]:
            learned += " ⚠"
        label = f"{row['label']} (exploratory)" if row.get("exploratory") else row["label"]
        lines.append(f"| {row['group']} | {label} | {row['mean']:.3f} ± {row['std']:.3f} | {delta} | {chance} | "
                     f"{learned} | {row['n']} |")  # fmt: skip
    return "\n".join(lines)


def confirmatory_table(rows: Sequence[Mapping[str, Any]], plan: AnalysisPlan | None) -> str:
    """The plan's primary contrasts (:func:`masterkey.research.plans.confirmatory_contrasts`) as a Markdown table: the
    mean
    difference, its 95% interval, the Bonferroni interval at the family's level, the Holm-adjusted p-value and
    whether it holds; empty without a plan in force."""
    if plan is None or not rows:
        return ""
    family = f"{1 - plan.alpha / len(rows):.2%}".rstrip("0").rstrip(".")
    lines = [f"| primary contrast | Δ (A − B) | 95% CI | {family} CI (Bonferroni) | p (Holm, {len(rows)} contrasts) | "
             "holds | seeds |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if r["mean"] is None:
            lines.append(f"| {r['name']} | | | | | no (no runs) | 0 |")
            continue
        lines.append(f"| {r['name']} | {r['mean']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | "
                     f"[{r['family_low']:+.3f}, {r['family_high']:+.3f}] | {r['p_holm']:.3g} | "
                     f"{'**yes**' if r['holds'] else 'no'} | {_pairs(r)} |")  # fmt: skip
    return "\n".join(lines)


def time_to_reach_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`~.statistics.time_to_reach` as a Markdown table: per cell, how many runs reached from scratch's final
    accuracy, the mean epochs, steps (where recorded) and seconds of training they took, and that as a share of from
    scratch's with its 95% interval; empty without any."""
    if not rows:
        return ""
    lines = ["| group | filters | reached scratch's final accuracy | epochs (mean) | steps (mean) | "
             "training s (mean) | share of scratch's training, 95% CI |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if not r["reached"]:
            lines.append(f"| {r['group']} | {r['label']} | 0/{r['n']} | | | | |")
            continue
        share = r["share_of_scratch"]
        steps = "" if r.get("steps_mean") is None else f"{r['steps_mean']:.0f}"
        lines.append(f"| {r['group']} | {r['label']} | {r['reached']}/{r['n']} | {r['epochs_mean']:.1f} | {steps} | "
                     f"{r['seconds_mean']:.0f} | {share['mean']:.2f} [{share['low']:.2f}, {share['high']:.2f}] |")
    return "\n".join(lines)
