"""Analysis plans: what an experiment will conclude from, written and committed before any test-split result exists.

An experiment names its plan (``ExperimentConfig.plan``: the path of a ``plan.json`` in the repository). The plan
fixes the seeds, the cells, the primary contrasts, the correction across them (Holm) and the level; prose beside it
(``plan.md``) says what each verdict's wording requires. When the experiment's results are written,
:func:`plan_record` reads the plan **as it was committed before the first test-split result** from git, not as it is
on disk:

- the plan in force is the last commit of the plan file made before the first run that scored on the test split
  finished; contrasts, cells and seeds it does not name are **exploratory**, and so is everything when no commit of
  the plan precedes the first result;
- a plan file edited after that (a later commit, or changes not committed) is reported in the results, never used.

:func:`confirmatory_contrasts` then computes the primary contrasts (paired by seed, over the plan's seeds only) with
two-sided paired t tests, Holm's step-down adjustment across the primary family, and a Bonferroni interval at the
family's level; a contrast **holds** only where its Holm-adjusted p-value is below the plan's level.

Example:
    >>> record = plan_record("docs/experiments/cross-family/plan.json", first_result_at=1765000000.0)
    >>> record["status"]
    'committed before the first test result'
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import TrainingConfigError
from .intervals import paired_difference, source_clusters

__all__ = [
    "AnalysisPlan",
    "CORRECTIONS",
    "plan_record",
    "planned_experiment",
    "holm_adjust",
    "bh_adjust",
    "confirmatory_contrasts",
    "mark_exploratory",
]

#: The corrections for multiple primary contrasts a plan may name.
CORRECTIONS = ("holm",)
#: What the results say of a plan, by case.
IN_FORCE = "committed before the first test result"
NONE_BEFORE = "no commit of the plan precedes the first test result: every contrast is exploratory"
NO_RESULTS = "no test result yet"
NO_GIT = "the plan's commits cannot be read (no git repository): every contrast is exploratory"


@dataclass(frozen=True)
class AnalysisPlan:
    """One experiment's analysis plan, as ``plan.json`` holds it.

    ``primary`` lists the primary contrasts, each ``{"name": ..., "a": [group, label], "b": [group, label]}``;
    ``cells`` the ``[group, label]`` cells the plan runs (others are exploratory); ``seeds`` the seeds of every
    confirmatory run; ``correction`` and ``alpha`` the family-wise correction and level; ``budgets`` and ``wording``
    free-form records of the rules for budgets and verdict wording.

    Example:
        >>> plan = AnalysisPlan.from_dict({"experiment": "cross-family", "seeds": [5000, 5001],
        ...     "primary": [{"name": "x", "a": ["m", "bank"], "b": ["m", "from scratch"]}]})
        >>> plan.primary_pairs()
        [(('m', 'bank'), ('m', 'from scratch'))]
    """

    experiment: str
    seeds: tuple[int, ...]
    primary: tuple[Mapping[str, Any], ...]
    cells: tuple[tuple[str, str], ...] = ()
    correction: str = "holm"
    alpha: float = 0.05
    budgets: Mapping[str, Any] = field(default_factory=dict)
    wording: Mapping[str, str] = field(default_factory=dict)
    #: the seeds of the source networks whose filters the confirmatory runs use (``()``: no trained source, or one
    #: not named); runs of other sources are exploratory
    sources: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "the plan") -> AnalysisPlan:
        """A plan from the content of ``plan.json``, checked.

        Raises:
            TrainingConfigError: a missing or malformed field, an unknown correction, a level outside (0, 1).

        Example:
            >>> import json
            >>> plan = AnalysisPlan.from_dict(json.load(open("docs/experiments/cross-family/plan.json")))
            >>> plan.experiment, plan.seeds
            ('cross-family', (5101, 5102, 5103, 5104, 5105))
        """
        if not isinstance(data, Mapping):
            raise TrainingConfigError(f"{origin} must be a JSON object, not {type(data).__name__}.")
        known = {"experiment", "seeds", "primary", "cells", "correction", "alpha", "budgets", "wording", "notes",
                 "sources"}
        unknown = sorted(set(data) - known)
        missing = sorted({"experiment", "seeds", "primary"} - set(data))
        if unknown or missing:
            raise TrainingConfigError(f"{origin}: unknown keys {unknown}, missing keys {missing}; a plan holds "
                                      f"{', '.join(sorted(known))}.")  # fmt: skip
        seeds = data["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                               for s in seeds):  # fmt: skip
            raise TrainingConfigError(f"{origin}: 'seeds' must be a non-empty list of integers.")
        sources = data.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sources):
            raise TrainingConfigError(f"{origin}: 'sources' must be a list of integers (the source networks' seeds).")
        primary = data["primary"]
        if not isinstance(primary, list) or not all(_is_contrast(c) for c in primary):
            raise TrainingConfigError(f"{origin}: 'primary' must be a list of {{'name', 'a': [group, label], "
                                      "'b': [group, label]}.")  # fmt: skip
        cells = data.get("cells", [])
        if not isinstance(cells, list) or not all(_is_cell(c) for c in cells):
            raise TrainingConfigError(f"{origin}: 'cells' must be a list of [group, label].")
        correction, alpha = data.get("correction", "holm"), data.get("alpha", 0.05)
        if correction not in CORRECTIONS:
            raise TrainingConfigError(f"{origin}: correction {correction!r} is not one of {', '.join(CORRECTIONS)}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise TrainingConfigError(f"{origin}: 'alpha' must be a number in (0, 1), found {alpha!r}.")
        return cls(experiment=str(data["experiment"]), seeds=tuple(seeds), primary=tuple(dict(c) for c in primary),
                   cells=tuple((c[0], c[1]) for c in cells), correction=correction, alpha=float(alpha),
                   budgets=dict(data.get("budgets", {})), wording=dict(data.get("wording", {})),
                   sources=tuple(sources))  # fmt: skip

    def primary_pairs(self) -> list[tuple[tuple[str, str], tuple[str, str]]]:
        """The primary contrasts as ``((group_a, label_a), (group_b, label_b))``, in the plan's order.

        Example:
            >>> import json
            >>> plan = AnalysisPlan.from_dict(json.load(open("docs/experiments/cross-family/plan.json")))
            >>> plan.primary_pairs()[0]
            (('tf_efficientnet_lite0', 'imagenet-lite0 (frozen)'), ('tf_efficientnet_lite0', 'random (frozen)'))
        """
        return [((c["a"][0], c["a"][1]), (c["b"][0], c["b"][1])) for c in self.primary]

    def planned_cells(self) -> set[tuple[str, str]]:
        """The cells the plan runs: its ``cells``, and every cell a primary contrast names.

        Example:
            >>> import json
            >>> plan = AnalysisPlan.from_dict(json.load(open("docs/experiments/cross-family/plan.json")))
            >>> len(plan.planned_cells())  # 4 targets x 4 arms, and the secondary mapping=stage cell
            17
        """
        return set(self.cells) | {cell for pair in self.primary_pairs() for cell in pair}


def _is_cell(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _is_contrast(value: Any) -> bool:
    return isinstance(value, Mapping) and _is_cell(value.get("a")) and _is_cell(value.get("b"))


def _git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def planned_experiment(path: str | Path) -> str | None:
    """The experiment the plan file at ``path`` names (its ``experiment``), as it is on disk: which experiment the plan
    is about, so that the tuning runs an experiment's config also drives (its regime pilot, its lr-sweep) are not
    judged by it. ``None`` for a file that is not a JSON object.

    Raises:
        TrainingConfigError: the file cannot be read or is not JSON.

    Example:
        >>> planned_experiment("docs/experiments/cross-family/plan.json")
        'cross-family'
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingConfigError(f"Cannot read the analysis plan {str(path)!r}: {e}") from None
    return data.get("experiment") if isinstance(data, Mapping) else None


def plan_record(path: str | Path, *, first_result_at: float | None) -> dict[str, Any]:
    """Which version of the plan at ``path`` is in force for results whose first test-split run finished at
    ``first_result_at`` (a POSIX time; ``None`` when none has), read from git; and whether the plan was edited
    afterwards. The returned record goes into ``results.json`` as ``plan``; its ``plan`` entry (the plan in force,
    or ``None``) is what :func:`confirmatory_contrasts` uses.

    Raises:
        TrainingConfigError: the plan file does not exist, or the version in force is malformed.

    Example:
        >>> plan_record("docs/experiments/cross-family/plan.json", first_result_at=None)["status"]
        'no test result yet'
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise TrainingConfigError(f"The analysis plan {str(path)!r} does not exist: write it (and commit it) before "
                                  "any test-split run, or leave ExperimentConfig.plan unset.")  # fmt: skip
    on_disk = path.read_bytes()
    record: dict[str, Any] = {"path": str(path), "sha256_on_disk": hashlib.sha256(on_disk).hexdigest(),
                              "first_result_at": _iso(first_result_at)}  # fmt: skip
    top = _git(["rev-parse", "--show-toplevel"], path.parent)
    log = _git(["log", "--format=%H %ct", "--", path.name], path.parent) if top else None
    if top is None or log is None:
        return {**record, "status": NO_GIT, "plan": None, "edited_after": None}
    relative = path.relative_to(Path(top.strip()).resolve()).as_posix()
    commits = [(line.split()[0], float(line.split()[1])) for line in log.splitlines() if line.strip()]
    head = _git(["show", f"HEAD:{relative}"], path.parent)
    uncommitted = head is None or head.encode("utf-8") != on_disk
    if first_result_at is None:
        in_force = commits[0] if commits else None
    else:
        in_force = next(((c, t) for c, t in commits if t <= first_result_at), None)
    later = [c for c, t in commits if in_force is not None and t > in_force[1]]
    edited = [f"commit {c[:12]} after the first test result" for c in later] if first_result_at is not None else []
    if uncommitted:
        edited.append("changes on disk that are not committed (not used)")
    record.update(commits=[{"commit": c, "committed_at": _iso(t)} for c, t in commits], edited_after=edited)
    if in_force is None:
        status = NO_RESULTS if first_result_at is None else NONE_BEFORE
        return {**record, "status": status, "plan": None, "commit": None}
    text = _git(["show", f"{in_force[0]}:{relative}"], path.parent)
    try:
        plan = AnalysisPlan.from_dict(json.loads(text or ""), origin=f"{relative} at {in_force[0][:12]}")
    except ValueError as e:
        raise TrainingConfigError(f"The committed plan {relative} at {in_force[0][:12]} is not JSON: {e}") from None
    status = NO_RESULTS if first_result_at is None else IN_FORCE
    return {**record, "status": status, "commit": in_force[0], "committed_at": _iso(in_force[1]),
            "plan": plan}  # fmt: skip


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: the i-th smallest is multiplied by ``m - i`` (i from
    0), made non-decreasing, capped at 1.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values; they control the false discovery rate, not the family-wise
    error as :func:`holm_adjust` does), in the given order: the i-th smallest of m is multiplied by ``m / i`` (i from
    1), made non-decreasing from the largest down, capped at 1.

    Example:
        >>> bh_adjust([0.01, 0.04, 0.03])
        [0.03, 0.04, 0.04]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for rank, i in zip(range(m, 0, -1), order):
        running = min(running, m * p_values[i] / rank)
        adjusted[i] = running
    return adjusted


def confirmatory_contrasts(records: Sequence[Mapping[str, Any]], plan: AnalysisPlan) -> list[dict[str, Any]]:
    """The plan's primary contrasts on ``records`` (one per run: ``group``, ``label``, ``seed``, ``accuracy``), each
    cell A minus cell B paired by seed over the plan's seeds: the mean, the two-sided paired t p-value, its Holm
    adjustment across the primary family, the 95% interval and the Bonferroni interval at the family's level
    (``alpha / m``), and ``holds`` (Holm-adjusted p below ``alpha``). Where the runs name their source networks
    (``source_seed``), test and intervals are over the per-source means
    (:func:`masterkey.research.intervals.paired_difference`), so source variation is inside them. A contrast missing
    a cell or a seed of the plan reports how many pairs it has and never holds.

    Example:
        >>> confirmatory_contrasts(results["runs"], plan)[0]["holds"]
        True
    """
    runs: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in records:
        if r["seed"] in plan.seeds and (not plan.sources or r.get("source_seed") in (None, *plan.sources)):
            runs.setdefault((r["group"], r["label"]), {})[r["seed"]] = r
    rows = []
    m = len(plan.primary)
    for contrast, (a, b) in zip(plan.primary, plan.primary_pairs()):
        seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        differences = [runs[a][s]["accuracy"] - runs[b][s]["accuracy"] for s in seeds]
        clusters = source_clusters([(runs[a][s], runs[b][s]) for s in seeds])
        test = paired_difference(differences, clusters=clusters) if seeds else {
            "mean": None, "pairs": 0, "p": 1.0, "low": None, "high": None}  # fmt: skip
        family = paired_difference(differences, clusters=clusters, level=plan.alpha / max(m, 1)) if seeds else test
        test = {k: v for k, v in test.items() if k != "real"}
        rows.append({"name": contrast.get("name", f"{', '.join(a)} - {', '.join(b)}"), "a": ", ".join(a),
                     "b": ", ".join(b), **test, "family_low": family["low"], "family_high": family["high"],
                     "complete": len(seeds) == len(plan.seeds)})  # fmt: skip
    for row, adjusted in zip(rows, holm_adjust([r["p"] for r in rows])):
        row["p_holm"] = adjusted
        row["holds"] = bool(row["complete"] and adjusted < plan.alpha)
    return rows


def mark_exploratory(records: Sequence[Mapping[str, Any]], plan: AnalysisPlan | None) -> list[dict[str, Any]]:
    """``records`` with ``exploratory`` set on each: true for a run whose seed, cell or source network (where the
    plan names ``sources``) the plan in force does not name, and for every run when no plan is in force.

    Example:
        >>> [r["exploratory"] for r in mark_exploratory(runs, plan)]
        [False, False, True]
    """
    if plan is None:
        return [{**r, "exploratory": True} for r in records]
    cells, seeds = plan.planned_cells(), set(plan.seeds)

    def planned(r: Mapping[str, Any]) -> bool:
        source = r.get("source_seed")
        return ((r["group"], r["label"]) in cells and r["seed"] in seeds
                and (source is None or not plan.sources or source in plan.sources))  # fmt: skip

    return [{**r, "exploratory": not planned(r)} for r in records]
