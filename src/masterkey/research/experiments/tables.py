"""The Markdown of a grid's results: its tables (cells, paired contrasts, the plan's primary contrasts, time to
reach), its wall time and how to reproduce it."""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from ..plans import AnalysisPlan
from .config import SCALES

_logger = logging.getLogger(__name__)


def format_difference(difference: Mapping[str, Any] | None) -> str:
    """A :func:`paired_difference` as ``+0.021 [+0.003, +0.040]``, bold where it is real; empty for ``None``.

    Example:
        >>> format_difference({"mean": 0.021, "low": 0.003, "high": 0.040, "real": True})
        '**+0.021 [+0.003, +0.040]**'
    """
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
    """:func:`paired_contrasts` as a Markdown table (the interval bold where it excludes 0); empty without any.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> contrasts = read_results("docs/experiments/transfer-matrix/results.json")["contrasts"]
        >>> print(contrast_table(contrasts).splitlines()[0])
        | cell A | minus cell B | Δ (A − B), 95% CI | seeds |
    """
    if not contrasts:
        return ""
    lines = ["| cell A | minus cell B | Δ (A − B), 95% CI | seeds |", "|---|---|---|---|"]
    for c in contrasts:
        b = f"{c['b']} (exploratory)" if c.get("exploratory") else c["b"]
        lines.append(f"| {c['a']} | {b} | {format_difference(c)} | {_pairs(c)} |")
    return "\n".join(lines)


def markdown_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table: accuracy as mean ± std over seeds, the paired difference to from-scratch with
    its 95% interval (bold where it excludes 0), chance, and how many seeds learned (:func:`learning_check`).

    Example:
        >>> from masterkey.research.experiments import read_results, summarize
        >>> runs = read_results("docs/experiments/transfer-matrix/results.json")["runs"]
        >>> print(markdown_table(summarize(runs)).splitlines()[0])
        | group | filters | accuracy (mean ± std) | Δ vs scratch, 95% CI | chance | learned | seeds |
    """
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
    mean difference, its 95% interval, the Bonferroni interval at the family's level, the Holm-adjusted p-value and
    whether it holds; empty without a plan in force.

    Example:
        >>> from masterkey.research.plans import confirmatory_contrasts
        >>> print(confirmatory_table(confirmatory_contrasts(results["runs"], plan), plan))
    """
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
    scratch's with its 95% interval; empty without any.

    Example:
        >>> from masterkey.research.experiments import read_results, time_to_reach
        >>> runs = read_results("docs/experiments/transfer-matrix/results.json")["runs"]
        >>> print(time_to_reach_table(time_to_reach(runs)).splitlines()[0][:54])
        | group | filters | reached scratch's final accuracy |
    """
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


def wall_time_text(data: Mapping[str, Any]) -> str:
    """The experiment's wall time (its ``results.json`` content ``data``), saying which runs it covers where
    ``--resume`` read some back from earlier runs.

    Example:
        >>> wall_time_text({"wall_time_s": 90, "runs": [{}, {}]})
        'wall time 1.5 min'
    """
    earlier = (data.get("earlier_results") or {}).get("runs_read", 0)
    minutes, reused, total = data["wall_time_s"] / 60, data.get("reused_runs", 0) + earlier, len(data["runs"])
    if not reused:
        return f"wall time {minutes:.1f} min"
    how = "--resume" + (", and the records of earlier results for the runs not retrained" if earlier else "")
    train_minutes = sum(r.get("train_time_s", 0) for r in data["runs"]) / 60
    training = f"the {total} runs' own training time adds up to {train_minutes:.0f} min"
    if reused >= total:  # the last invocation trained nothing: its wall time says nothing about the experiment
        return f"{training}; the last invocation only read them back ({how})"
    return (f"wall time {minutes:.1f} min for the last invocation, which read {reused} runs and source networks "
            f"back from earlier ones ({how}); {training}")  # fmt: skip


def reproduce_text(data: Mapping[str, Any]) -> str:
    """How to run an experiment's results again: its command, or, where the scale it named has changed since, its
    ``config.json`` (which holds every setting). A command with ``--config`` took its scale from that file, not
    from a named scale, so it is given as it is, with the ``config.json`` beside the results as the record.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> reproduce_text(read_results("docs/experiments/regime/results.json"))
        'Reproduce with `masterkey experiment regime --config ...`; the config.json beside the results holds ...'
    """
    scale = data["scale"]
    arguments = shlex.split(data["command"])
    if "--config" in arguments:
        return (f"Reproduce with `{data['command']}`; the config.json beside the results holds every setting as "
                "run.")  # fmt: skip
    current = SCALES.get(scale["name"])
    now = None if current is None else json.loads(json.dumps(asdict(current)))  # as results.json holds it
    if now is not None and "--seeds" in arguments:  # the command itself says which seeds
        now["seeds"] = scale.get("seeds", now["seeds"])
    if now is None or now == {**now, **scale}:
        return f"Reproduce with `{data['command']}`."
    return (f"Ran as `{data['command']}`, when the `{scale['name']}` scale meant {scale['resolution']} px; reproduce "
            f"with `masterkey experiment {data['experiment']} --config config.json` (the config.json beside the "
            "results).")  # fmt: skip


def _rate(value: float) -> str:
    """A learning rate as the pages write it: 2e-3, 1.6e-2."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def tuning_table(results: Mapping[str, Any]) -> str:
    """A tuning experiment's runs as one row per cell and one column per setting tried, as a Markdown table: the
    regime pilot's accuracy per budget (epochs; "(converged)" where it rose by less than
    :data:`~.statistics.CONVERGED_RISE` over its last two epochs) with the smallest converged budget, or the
    lr-sweep's accuracy per learning rate (mean over seeds) with the chosen rate in bold (``details.best``). Scores on
    the validation split the tuning held out; empty for other experiments.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> print(tuning_table(read_results("docs/experiments/cross-family/regime/results.json")))
    """
    runs = results["runs"]
    if results["experiment"] == "lr-sweep":
        best = (results.get("details") or {}).get("best") or {}
        rates = sorted({r["learning_rate"] for r in runs})
        cells: dict[tuple[str, str], dict[float, list[float]]] = {}
        for r in runs:
            cells.setdefault(tuple(r["group"].split(": ", 1)), {}).setdefault(r["learning_rate"], []).append(
                r["accuracy"])
        lines = ["| tuned for | arm | " + " | ".join(map(_rate, rates)) + " | chosen |",
                 "|---|---|" + "---|" * (len(rates) + 1)]  # fmt: skip
        for (key, arm), by_rate in cells.items():
            chosen = best.get(key, {}).get(arm)
            row = []
            for rate in rates:
                text = "" if rate not in by_rate else f"{sum(by_rate[rate]) / len(by_rate[rate]):.3f}"
                row.append(f"**{text}**" if text and chosen is not None and math.isclose(rate, chosen) else text)
            lines.append(f"| {key} | {arm} | " + " | ".join(row) + f" | {'' if chosen is None else _rate(chosen)} |")
        return "\n".join(lines)
    if results["experiment"] == "regime":
        budgets = sorted({r["x"] for r in runs})
        groups: dict[str, dict[Any, Mapping[str, Any]]] = {}
        for r in runs:
            groups.setdefault(r["group"], {})[r["x"]] = r
        lines = ["| group | " + " | ".join(f"{b} epochs" for b in budgets) + " | smallest converged |",
                 "|---|" + "---|" * (len(budgets) + 1)]  # fmt: skip
        for group, by_budget in groups.items():
            row = [("" if b not in by_budget else f"{by_budget[b]['accuracy']:.3f}"
                    + (" (converged)" if by_budget[b].get("converged") else "")) for b in budgets]  # fmt: skip
            converged = [b for b in budgets if b in by_budget and by_budget[b].get("converged")]
            lines.append(f"| {group} | " + " | ".join(row) + f" | {converged[0] if converged else 'none'} |")
        return "\n".join(lines)
    return ""
