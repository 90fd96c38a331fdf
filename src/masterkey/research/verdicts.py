"""Verdicts worded by an analysis plan's rules, from its primary contrasts.

A plan (:mod:`masterkey.research.plans`) fixes, before any test-split result, what each verdict's wording requires:
a contrast **holds** only where its Holm-adjusted p-value is below the plan's level, and otherwise the verdict says
"not shown" and states the bounds of its Bonferroni interval (the effects it rules out). The functions here apply
those rules to an experiment's ``results.json`` so that the words in the README and on the results pages are
computed, not chosen after seeing the numbers: one rule function per planned experiment (:data:`VERDICT_RULES`),
each written from its committed ``plan.json`` ``wording``.

Example:
    >>> from masterkey.research.experiments import read_results
    >>> verdict = plan_verdict(read_results("docs/experiments/cross-family/cross-family/results.json"))
    >>> print(verdict.markdown())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ResultsFormatError

__all__ = ["Verdict", "VERDICT_RULES", "plan_verdict", "outcome", "describe"]

#: The three outcomes of a primary contrast.
POSITIVE, NEGATIVE, NOT_SHOWN = "holds positive", "holds negative", "not shown"

#: A margin the confirmatory plans fix: an interval above ``-MARGIN`` rules out a cost of a point or more.
MARGIN = 0.01


@dataclass(frozen=True)
class Verdict:
    """What an experiment's plan lets it say: ``headline`` (one sentence), ``statements`` (one per rule, in the
    plan's order) and ``complete`` (every primary contrast has all the plan's seeds; an incomplete verdict says so
    in its headline)."""

    experiment: str
    headline: str
    statements: list[str] = field(default_factory=list)
    complete: bool = True

    def markdown(self) -> str:
        """The headline in bold, then one bullet per statement."""
        return "\n".join([f"**{self.headline}**", "", *(f"- {s}" for s in self.statements)])

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "headline": self.headline, "statements": list(self.statements),
                "complete": self.complete}  # fmt: skip


def outcome(row: Mapping[str, Any]) -> str:
    """A primary contrast's outcome under the plan: ``"holds positive"`` or ``"holds negative"`` where it holds (its
    Holm-adjusted p-value below the plan's level, all seeds present), else ``"not shown"``.

    Example:
        >>> outcome({"holds": True, "mean": 0.02})
        'holds positive'
    """
    if not row.get("holds"):
        return NOT_SHOWN
    return POSITIVE if row["mean"] > 0 else NEGATIVE


def describe(row: Mapping[str, Any]) -> str:
    """One contrast in words: its mean difference with the Holm-adjusted p-value where it holds; else "not shown"
    with its Bonferroni interval, which bounds the effects it rules out.

    Example:
        >>> describe({"holds": False, "mean": 0.004, "family_low": -0.012, "family_high": 0.020, "p_holm": 0.6})
        'not shown (+0.004; the Bonferroni interval [-0.012, +0.020] rules out effects outside it)'
    """
    if row.get("mean") is None:
        return "not measured (no runs)"
    if row.get("holds"):
        return f"{outcome(row)} ({row['mean']:+.3f}, Holm p = {row['p_holm']:.2g})"
    bounds = f"[{row['family_low']:+.3f}, {row['family_high']:+.3f}]"
    missing = "" if row.get("complete", True) else f", {row.get('pairs', 0)} pairs: incomplete"
    return f"not shown ({row['mean']:+.3f}; the Bonferroni interval {bounds} rules out effects outside it{missing})"


class _Contrasts:
    """The primary contrasts of one ``results.json`` by their plan names; a name the plan lacks is a typed error."""

    def __init__(self, results: Mapping[str, Any]):
        rows = results.get("confirmatory")
        if not isinstance(rows, list) or not rows:
            raise ResultsFormatError(
                f"The {results.get('experiment')!r} results hold no primary contrasts (no 'confirmatory' rows): no "
                "plan was in force when they were written, so there is no verdict to word; see results['plan']."
            )
        self.rows = {r["name"]: r for r in rows}
        self.complete = all(r.get("complete") for r in rows)

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        try:
            return self.rows[name]
        except KeyError:
            raise ResultsFormatError(f"The plan in force names no primary contrast {name!r} (it names "
                                     f"{', '.join(map(repr, self.rows))}); the verdict's rules were written for "
                                     "another plan.") from None  # fmt: skip

    def outcome(self, name: str) -> str:
        return outcome(self[name])

    def above(self, name: str, margin: float = MARGIN) -> bool:
        """Whether the Bonferroni interval of ``name`` lies above ``-margin`` (rules out a cost of ``margin``)."""
        row = self[name]
        return bool(row.get("complete") and row.get("family_low") is not None and row["family_low"] > -margin)


def _headline(contrasts: _Contrasts, text: str) -> str:
    return text if contrasts.complete else f"Incomplete (not every primary contrast has all its seeds): {text}"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _cells(pairs: Sequence[tuple[str, str]]) -> str:
    """(target, bank) pairs in words: "imagenet-lite0 in `convnext_atto`", joined."""
    return _join([f"{b} in `{t}`" for t, b in pairs])


def _extent(held: Sequence[tuple[str, str]], tried: Sequence[tuple[str, str]], *, every: str, some: str,
            none: str) -> str:
    """``every`` where all of ``tried`` held, ``some`` naming the ones that did (its ``{}``), else ``none``."""
    if held and len(held) == len(tried):
        return every
    return some.format(_cells(held)) if held else none


def cross_family_verdict(results: Mapping[str, Any]) -> Verdict:
    """Verdict 4 under ``docs/experiments/cross-family/plan.json``: per target and bank, whether the bank helps
    (bank − random holds positive), beats scratch (bank − scratch holds positive) or costs (either holds negative);
    within the family (the own-family bank − random in its own family); across families (bank − random in every
    target outside the bank's family, for both banks: holds, holds in part naming which, or not shown); and the own
    family's bank better only where own − other holds positive.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> results = read_results("docs/experiments/cross-family/cross-family/results.json")
        >>> print(cross_family_verdict(results).markdown())
    """
    c = _Contrasts(results)
    details = results["details"]
    targets, banks, own = list(details["targets"]), list(details["banks"]), dict(details["own_family"])
    statements = []
    for target in targets:
        parts = []
        for bank in banks:
            random, scratch = c[f"{target}: {bank} - random"], c[f"{target}: {bank} - scratch"]
            kinds = [k for k, row in (("helps", random), ("beats scratch", scratch)) if outcome(row) == POSITIVE]
            if NEGATIVE in (outcome(random), outcome(scratch)):
                kinds.append("costs")
            verb = " and ".join(kinds) if kinds else "neither helps nor costs (not shown)"
            parts.append(f"{bank} {verb}: vs random {describe(random)}; vs scratch {describe(scratch)}")
        mine = own.get(target)
        if mine in banks:
            for other in banks:
                if other != mine:
                    row = c[f"{target}: own family ({mine}) - {other}"]
                    better = "is better" if outcome(row) == POSITIVE else "is not shown better"
                    parts.append(f"the own family's bank ({mine}) {better} than {other}: {describe(row)}")
        statements.append(f"In `{target}`: " + "; ".join(parts) + ".")
    within = [(t, b) for t, b in own.items() if t in targets and b in banks]
    held_within = [(t, b) for t, b in within if c.outcome(f"{t}: {b} - random") == POSITIVE]
    across = [(t, b) for b in banks for t in targets if own.get(t) != b]
    held_across = [(t, b) for t, b in across if c.outcome(f"{t}: {b} - random") == POSITIVE]
    if within:
        missing = [(t, b) for t, b in within if (t, b) not in held_within]
        statements.append(("Within the family: holds for " + _cells(held_within) if held_within
                           else "Within the family: not shown")
                          + (f" (not shown for {_cells(missing)})" if held_within and missing else "") + ".")
    across_text = _extent(held_across, across, every="holds across families",
                          some="holds in part across families ({})", none="is not shown across families")
    within_text = _extent(held_within, within, every="holds within the family",
                          some="holds within the family for {} only", none="is not shown within the family")
    headline = _headline(c, f"Verdict 4 {within_text}, and {across_text}.")
    return Verdict("cross-family", headline, statements, c.complete)


def transfer_verdict(results: Mapping[str, Any]) -> Verdict:
    """Verdict 1 under ``docs/experiments/confirm-verdict-1/plan.json``: on each dataset D, it holds when bank −
    scratch holds positive, credited to the filters only where bank − random holds positive too; where bank − scratch
    is not shown but the bank reaches from scratch's final accuracy sooner (the exploratory time-to-reach share,
    interval below 1), the bank buys faster training only; and from scratch's convergence is stated where more than
    1 run of the plan's seeds did not converge.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> results = read_results("docs/experiments/confirm-verdict-1/transfer-matrix/results.json")
        >>> print(transfer_verdict(results).headline)
    """
    c = _Contrasts(results)
    bank = results["config"]["bank"]
    label = f"{bank} (frozen)"
    plan_seeds = set((results.get("plan") or {}).get("plan", {}).get("seeds") or ())
    reach = {(r["group"], r["label"]): r for r in results.get("time_to_reach", [])}
    statements, held = [], []
    for dataset in results["config"]["datasets"]:
        scratch, random = c[f"{dataset}: {bank} - scratch"], c[f"{dataset}: {bank} - random"]
        if outcome(scratch) == POSITIVE:
            held.append(dataset)
            credit = ("credited to the filters (bank − random " + describe(random) + ")"
                      if outcome(random) == POSITIVE else
                      "not credited to the filters rather than freezing (bank − random " + describe(random) + ")")
            text = f"holds on {dataset}: bank − scratch {describe(scratch)}; {credit}"
        else:
            text = f"not shown on {dataset}: bank − scratch {describe(scratch)}; bank − random {describe(random)}"
            faster = reach.get((dataset, label))
            share = (faster or {}).get("share_of_scratch")
            if share and share.get("high") is not None and share["high"] < 1:
                text += (f"; the bank buys faster training only: it reaches from scratch's final accuracy in "
                         f"{share['mean']:.2f} [{share['low']:.2f}, {share['high']:.2f}] of scratch's training "
                         "(exploratory)")  # fmt: skip
        unconverged = [r for r in results.get("runs", []) if r.get("group") == dataset and r.get("filters") == "none"
                       and (not plan_seeds or r.get("seed") in plan_seeds) and r.get("converged") is False]
        if len(unconverged) > 1:
            text += f"; from scratch did not converge in {len(unconverged)} of its runs"
        statements.append(text[0].upper() + text[1:] + ".")
    headline = ("Verdict 1 holds on " + _join(held) if held else "Verdict 1 is not shown") + (
        f" (not shown on {_join([d for d in results['config']['datasets'] if d not in held])})"
        if held and len(held) < len(results["config"]["datasets"]) else "") + "."
    return Verdict("transfer-matrix", _headline(c, headline), statements, c.complete)


def layer_split_verdict(results: Mapping[str, Any]) -> Verdict:
    """Verdict 2 under ``docs/experiments/confirm-verdict-2/plan.json``: at each depth n the plan names, frozen
    depthwise layers from another task cost less than a point when AnB depthwise − scratch's Bonferroni interval lies
    above −0.01 (they cost where it holds negative); the pointwise layers are the more task-bound where AnB depthwise −
    AnB pointwise holds positive; depthwise layers are not task-specific where AnB − BnB depthwise's interval lies above
    −0.01, pointwise layers are task-specific where AnB − BnB pointwise holds negative (else their fall is put down to
    co-adaptation only where that interval lies above −0.01). It holds when, at every n, the depthwise layers cost
    less than a point and the pointwise control holds positive.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> results = read_results("docs/experiments/confirm-verdict-2/layer-split/results.json")
        >>> print(layer_split_verdict(results).headline)
    """
    c = _Contrasts(results)
    depths = sorted({name.split(":")[0] for name in c.rows}, key=lambda n: int(n.split("=")[1]), reverse=True)
    statements, met = [], []
    for n in depths:
        dw_scratch = c[f"{n}: AnB depthwise - scratch"]
        control = c[f"{n}: AnB depthwise - AnB pointwise"]
        dw_spec, pw_spec = c[f"{n}: AnB depthwise - BnB depthwise"], c[f"{n}: AnB pointwise - BnB pointwise"]
        if c.above(f"{n}: AnB depthwise - scratch"):
            cost, cheap = "cost less than 1 point", True
        elif outcome(dw_scratch) == NEGATIVE:
            cost, cheap = "cost", False
        else:
            cost, cheap = "a cost of 1 point is not ruled out", False
        cost += f" — AnB depthwise − scratch {describe(dw_scratch)}"
        bound = outcome(control) == POSITIVE
        control_text = ("the pointwise layers are the more task-bound" if bound else
                        "the pointwise layers are not shown more task-bound") + f" — {describe(control)}"
        dw_text = ("depthwise layers are not task-specific" if c.above(f"{n}: AnB depthwise - BnB depthwise")
                   else "depthwise specificity is not ruled out") + f" — {describe(dw_spec)}"
        if outcome(pw_spec) == NEGATIVE:
            pw_text = "pointwise layers are task-specific"
        elif c.above(f"{n}: AnB pointwise - BnB pointwise"):
            pw_text = "the pointwise fall is co-adaptation, not task-specificity"
        else:
            pw_text = "pointwise specificity is not shown"
        statements.append(f"At {n}: frozen depthwise layers from another task {cost}; {control_text}; {dw_text}; "
                          f"{pw_text} — {describe(pw_spec)}.")  # fmt: skip
        if cheap and bound:
            met.append(n)
    headline = ("Verdict 2 holds" if met and len(met) == len(depths) else
                "Verdict 2 is not shown" + (f" (its conditions hold at {_join(met)} only)" if met else "")) + "."
    return Verdict("layer-split", _headline(c, headline), statements, c.complete)


def source_size_verdict(results: Mapping[str, Any]) -> Verdict:
    """Verdict 3 under ``docs/experiments/confirm-verdict-3/plan.json``: informative only where the positive control
    (imagenet-lite0 − random) holds positive, else "the target cannot tell good filters from bad here" and nothing on
    source size; then a larger source gives better filters when 100% − 10% holds positive, and filters from the
    largest share beat frozen random filters when 100% − random holds positive.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> results = read_results("docs/experiments/confirm-verdict-3/source-size/results.json")
        >>> print(source_size_verdict(results).headline)
    """
    c = _Contrasts(results)
    control_name = next((n for n in c.rows if n.startswith("positive control")), None)
    if control_name is None:
        raise ResultsFormatError("The plan in force names no 'positive control' contrast; verdict 3's rules need one.")
    control = c[control_name]
    if outcome(control) != POSITIVE:
        statement = f"The positive control ({control_name.split(': ', 1)[-1]}) {describe(control)}."
        headline = "Verdict 3 cannot be judged: the target cannot tell good filters from bad here."
        return Verdict("source-size", _headline(c, headline), [statement], c.complete)
    statements = [f"The positive control ({control_name.split(': ', 1)[-1]}) {describe(control)}: the target can tell "
                  "good filters from bad."]  # fmt: skip
    larger = [n for n in c.rows if n.startswith("100% - ")]
    held = []
    for name in larger:
        row = c[name]
        statements.append(f"{name}: {describe(row)}.")
        if outcome(row) == POSITIVE:
            held.append(name)
    random = next((n for n in c.rows if n.endswith(" - random") and not n.startswith("positive control")), None)
    if random is not None:
        beats = "beat" if c.outcome(random) == POSITIVE else "are not shown to beat"
        statements.append(f"Filters from the largest share {beats} frozen random filters: {describe(c[random])}.")
    smallest = next((n for n in larger if n.endswith("10% of animal-mnist")), larger[0] if larger else None)
    holds = smallest is not None and smallest in held
    headline = ("Verdict 3 holds: a larger source gives better filters within one domain." if holds
                else "Verdict 3 is not shown: a larger source is not shown to give better filters.")
    return Verdict("source-size", _headline(c, headline), statements, c.complete)


#: The rules of each planned experiment, by experiment name (each written from its committed plan's ``wording``).
VERDICT_RULES: dict[str, Callable[[Mapping[str, Any]], Verdict]] = {
    "cross-family": cross_family_verdict,
    "transfer-matrix": transfer_verdict,
    "layer-split": layer_split_verdict,
    "source-size": source_size_verdict,
}


def plan_verdict(results: Mapping[str, Any]) -> Verdict:
    """The verdict an experiment's ``results.json`` supports under the plan in force, worded by that plan's rules
    (:data:`VERDICT_RULES`).

    Raises:
        ResultsFormatError: no plan was in force (no primary contrasts), no rules exist for the experiment, or the
            plan lacks a contrast the rules need.

    Example:
        >>> plan_verdict(results).headline
        'Verdict 4 holds within the family, and holds in part across families (imagenet-lite0 in `convnext_atto`).'
    """
    name = results.get("experiment")
    if name not in VERDICT_RULES:
        raise ResultsFormatError(f"No verdict rules for the experiment {name!r}; rules exist for "
                                 f"{', '.join(VERDICT_RULES)}.")  # fmt: skip
    return VERDICT_RULES[name](results)
