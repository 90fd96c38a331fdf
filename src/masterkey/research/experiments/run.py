"""Running one experiment end to end: the grid, the plan in force, the summary, tables and plots, written under
``out_dir/<experiment>``."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ...constants import EXPERIMENT_NAMES
from ...errors import ResultsFormatError, TrainingConfigError
from ...training import BUILTIN_DATASETS
from ..plans import confirmatory_contrasts, mark_exploratory, plan_record, planned_experiment
from ..verdicts import VERDICT_RULES, plan_verdict
from .across_architectures import across_architectures
from .config import TUNING_EXPERIMENTS, ExperimentConfig, Scale, _scale_from
from .cross_family import cross_family
from .layer_split import layer_split
from .plots import _plot, plot_learning_curves
from .results import read_results
from .runner import _Runner
from .source_size import source_size
from .statistics import _chance_levels, paired_contrasts, summarize, time_to_reach
from .tables import confirmatory_table, contrast_table, markdown_table, time_to_reach_table
from .transfer_matrix import transfer_matrix
from .tuning import best_learning_rates, lr_sweep, regime

_logger = logging.getLogger(__name__)


#: The experiments, in the order of :data:`masterkey.constants.EXPERIMENT_NAMES` (the command line's choices).
EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = dict(
    zip(EXPERIMENT_NAMES,
        (regime, lr_sweep, transfer_matrix, layer_split, source_size, across_architectures, cross_family),
        strict=True)
)


def _apply_plan(
    experiment: str, config: ExperimentConfig, records: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The analysis plan's record (:func:`masterkey.research.plans.plan_record`) and ``records`` marked exploratory
    where the plan in force does not name their cell or seed; ``(None, records)`` for an experiment without a plan, or whose
    config's plan is another experiment's (the regime pilot and lr-sweep that tune a planned experiment)."""
    if config.plan is None or planned_experiment(config.plan) != experiment:
        return None, records  # a plan names its experiment: the tuning runs before it are not its subject
    # a tuning run scores on images held out of the training split; every other run is a result
    tested = [r["finished_at"] for r in records if "held out" not in str(r.get("eval_split")) and r.get("finished_at")]
    record = plan_record(config.plan, first_result_at=min(tested, default=None))
    if record["edited_after"]:
        _logger.warning("The analysis plan %s was edited after its version in force (%s): the edits are reported in "
                        "results.json and not used.", config.plan, "; ".join(record["edited_after"]))  # fmt: skip
    return record, mark_exploratory(records, record["plan"])


def _earlier_records(
    name: str, retrain: Sequence[str], path: str | Path | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The run records of the earlier ``results.json`` at ``path`` (of the experiment ``name``) for ``retrain``, and
    its ``label_notes`` (what a label meant when its runs trained), which go on with the records read from it."""
    if not retrain:
        if path is not None:
            raise TrainingConfigError("earlier_results is only read with retrain: name the runs to train again.")
        return [], {}
    if path is None:
        raise TrainingConfigError("retrain needs earlier_results: the results.json whose records stand in for the "
                                  "runs not trained again.")  # fmt: skip
    data = read_results(path, experiment=name)
    return data["runs"], dict(data.get("label_notes") or {})


def run_experiment(
    name: str,
    config: ExperimentConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    scale: str | Scale | None = None,
    out_dir: str | Path = "outputs/experiments",
    seeds: Sequence[int] | None = None,
    cpu_threads: int | None = None,
    resume: bool = False,
    jobs: int = 1,
    retrain: Sequence[str] = (),
    earlier_results: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run one experiment of :data:`EXPERIMENTS` and write its results, config, plot and command under
    ``out_dir/name``.

    ``config`` is an :class:`ExperimentConfig`, a mapping of its fields, or the path of a JSON file of them (the
    defaults without it); ``scale`` (a name of :data:`SCALES` or a :class:`Scale`) and ``seeds`` override its scale.
    ``cpu_threads`` sets torch's threads per run on CPU (1 avoids oversubscription on a busy machine). With
    ``resume``, runs that already finished under ``out_dir`` with the same configuration are read back instead of
    trained again, so an interrupted experiment continues where it stopped (``results["reused_runs"]`` counts them);
    once a source network is trained anew, every later run is trained too, since it may use that network's filters.
    ``jobs`` trains that many runs at a time, each in its own process (with ``cpu_threads=1``, one per core).

    ``retrain`` with ``earlier_results`` measures some cells again without the rest: only the runs whose folder names
    match one of the globs in ``retrain`` train; every other run's record is read from ``earlier_results`` (an
    earlier ``results.json`` of this experiment, whose run folders may be gone), after checking it is the same cell,
    seed, filters and rate. The summary, contrasts and plots then cover them all, and ``results["earlier_results"]``
    says which records came from where.

    Raises:
        TrainingConfigError: an unknown experiment, scale or config key; ``retrain`` without ``earlier_results``, a
            glob that matches no run, or a run neither retrained nor recorded earlier.

    Example:
        >>> run_experiment("across-architectures", scale="quick", out_dir="outputs/experiments")["summary"]
    """
    if name not in EXPERIMENTS:
        raise TrainingConfigError(f"Unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}.")
    if isinstance(config, (str, Path)):
        config = ExperimentConfig.from_json(config)
    elif config is None or isinstance(config, Mapping):
        config = ExperimentConfig.from_dict(config or {})
    if scale is not None:
        config = replace(config, scale=_scale_from(scale))
    if seeds is not None:
        config = replace(config, scale=replace(config.scale, seeds=tuple(seeds)))
    earlier, notes = _earlier_records(name, retrain, earlier_results)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    run = _Runner(name, config, folder, cpu_threads, resume, jobs, retrain=retrain, earlier=earlier)
    start = time.perf_counter()
    try:
        details = EXPERIMENTS[name](run)
        if run.unmatched_globs():
            raise TrainingConfigError(f"--retrain {' '.join(run.unmatched_globs())} matched no run of {name}; its run "
                                      "folders are named <group>__<arm>__seed<N> (see the earlier results' runs).")
        records = run.results()
    finally:
        run.close()
    if name == "lr-sweep":
        details["best"] = best_learning_rates(records)
    chance = _chance_levels(records, {**BUILTIN_DATASETS, **run.datasets})
    plan, records = _apply_plan(name, config, records)
    summary = summarize(records, chance=chance)
    contrasts = paired_contrasts(records, details.get("contrasts", ()))
    if plan is not None:  # the contrasts of the plan in force are primary; any other is exploratory
        primary = {(", ".join(a), ", ".join(b)) for a, b in (plan["plan"].primary_pairs() if plan["plan"] else [])}
        contrasts = [{**c, "exploratory": (c["a"], c["b"]) not in primary} for c in contrasts]
        confirmatory = confirmatory_contrasts(records, plan["plan"]) if plan["plan"] else []
    results = {
        "experiment": name, "model": config.model, "scale": asdict(config.scale), "config": config.to_dict(),
        "cpu_threads": cpu_threads, "jobs": jobs, "details": details,
        "command": command or " ".join(shlex.quote(a) for a in sys.argv), "wall_time_s": time.perf_counter() - start,
        "reused_runs": run.reused,
        "summary": summary, "table": markdown_table(summary).splitlines(), "runs": records,
        "contrasts": contrasts, "contrast_table": contrast_table(contrasts).splitlines(),
    }  # fmt: skip
    if retrain:
        results["earlier_results"] = {"path": str(earlier_results), "retrain": list(retrain),
                                      "runs_read": run.earlier_read}
        notes = {label: text for label, text in notes.items() if label in run.earlier_labels}
        if notes:  # records read from the earlier results keep what their labels meant then
            results["label_notes"] = notes
    if name not in TUNING_EXPERIMENTS:  # how much faster each arm gets where from scratch ends
        reach = time_to_reach(records)
        results.update(time_to_reach=reach, time_to_reach_table=time_to_reach_table(reach).splitlines())
    if plan is not None:
        results["plan"] = {**plan, "plan": asdict(plan["plan"]) if plan["plan"] else None}
        results["confirmatory"] = confirmatory
        results["confirmatory_table"] = confirmatory_table(confirmatory, plan["plan"]).splitlines()
        if confirmatory and name in VERDICT_RULES:  # worded by the plan's rules, not after seeing the numbers
            try:
                results["verdict"] = plan_verdict(results).to_dict()
            except ResultsFormatError as e:  # a plan the rules were not written for: the results are still written
                _logger.warning("No verdict for %s: %s", name, e)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "command.txt").write_text(results["command"] + "\n")
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    _plot(name, config.model, summary, folder / f"{name}.png", chance=chance)
    plot_learning_curves(records, folder / f"{name}-curves.png", title=f"{name}: accuracy per epoch")
    return results
