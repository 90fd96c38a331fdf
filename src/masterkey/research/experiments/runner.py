"""The grid runner: training runs of one experiment, in worker processes with ``jobs``, resumable, each recorded with
its learning check."""

from __future__ import annotations

import fnmatch
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from torch import nn

from ...bank import FilterBank
from ...errors import TrainingConfigError, WorkerError
from ..._timm import sha256_file
from ...extract import extract_filters
from ...training import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    ResolvedFilters,
    RunResults,
    injection_plan,
    make_config,
    slugify,
    train_transfer,
)
from ...training.config import run_identity
from ...names import canonical_filters
from ...training.outputs import CHECKPOINTS_DIR, WEIGHTS_NAME, find_checkpoint, finished_run
from .config import ExperimentConfig, Scale
from .statistics import learning_check

_logger = logging.getLogger(__name__)

SOURCE_BANK_DIR = "bank-all"  # a source network's whole depthwise bank, beside its weights


class _Runner:
    """Runs training jobs for one experiment and records one row per run. Datasets and filters the experiment makes
    itself (class halves, pointwise controls) are objects it hands to each run, never entries of a global registry.

    With ``jobs`` > 1 the runs of the cells go to that many worker processes (spawned, one run each), so ``jobs``
    one-thread runs share a CPU's cores; :meth:`results` waits for them. Source networks are trained before the runs
    that use their filters (:meth:`source_models` waits for them).

    With ``retrain`` (folder-name globs) and ``earlier`` (the run records of an earlier ``results.json`` of the same
    experiment, whose run folders may be gone), only the runs that match a glob train; every other run's record is
    the earlier one, checked to be the same cell, seed, filters and rate. A source network that finished with the
    same configuration in the earlier experiment's folder (``sources/`` beside its ``runs/``) is copied and read
    back rather than trained again; one whose folder is gone trains."""

    def __init__(self, experiment: str, config: ExperimentConfig, out_dir: Path, cpu_threads: int | None,
                 resume: bool, jobs: int = 1, *, retrain: Sequence[str] = (),
                 earlier: Sequence[Mapping[str, Any]] = ()):  # fmt: skip
        self.experiment, self.config, self.out_dir, self.cpu_threads = experiment, config, out_dir, cpu_threads
        self.resume, self.reused = resume, 0
        self.retrain, self.matched = tuple(retrain), set()  # the globs, and those that matched a run
        self.earlier_read = 0  # runs whose record is the earlier one
        self.earlier_labels: set[str] = set()  # the labels of those runs
        self.earlier = {Path(r["run"]).name: r for r in earlier}  # run folder name -> earlier record
        # the earlier experiment's folder (<out>/<experiment>, above runs/), where its source networks may still be
        self.earlier_dir = Path(earlier[0]["run"]).parent.parent if earlier else None
        self.sources: set[Path] = set()  # the source networks' folders
        self.stale_sources: set[Path] = set()  # source networks trained anew: runs using their filters retrain
        self.pending: list[tuple[dict[str, Any], Any]] = []  # (record without results, result or future)
        self.datasets: dict[str, BuiltinDataset] = {}
        self.filters: dict[str, Callable[[nn.Module], ResolvedFilters]] = {}
        self.pool = None
        self.submitted = self.finished = 0  # runs handed to the workers, and those that ended
        if jobs > 1:
            self.pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                            max_tasks_per_child=1)  # fmt: skip

    @property
    def scale(self) -> Scale:
        return self.config.scale

    def settings(self, output_dir: Path, **options: Any) -> dict[str, Any]:
        """:func:`train_transfer`'s keyword arguments for one run into ``output_dir``: the scale's recipe (the
        dataset's own epochs where the scale names them, the arm's own learning rate where the config does), then
        ``options``."""
        s = self.scale
        dataset = options.get("dataset_name")
        settings = dict(
            model=self.config.model, resolution=s.resolution,
            num_train_epochs=s.epochs(dataset),
            max_train_steps=s.max_train_steps, max_train_samples=s.train_samples(dataset),
            max_eval_samples=s.max_eval_samples, per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=128, learning_rate=s.learning_rate, lr_scheduler_type="cosine",
            num_warmup_steps=s.num_warmup_steps,
            crop_scale=(0.5, 1.0),  # timm's default (0.08, 1) crops small images beyond recognition
            output_dir=str(output_dir), overwrite_output_dir=True, cpu_threads=self.cpu_threads,
            # the newest epoch's state, so that --resume continues a run cut off mid-way where it stopped (resuming is
            # exact: the weights of an uninterrupted run); dropped once the run has finished
            checkpointing_steps="epoch", checkpoints_total_limit=1,
        )  # fmt: skip
        settings.update(options)
        return settings

    def train(self, output_dir: Path, *, read_back: bool = False, needs_weights: bool = False, **options: Any) -> Any:
        """One training run into ``output_dir``; ``options`` are :func:`train_transfer`'s keyword arguments. With
        ``resume`` (or ``read_back``), a run that already finished there with the same configuration, its filters
        injected as today's rules inject them, is not trained again; with ``needs_weights`` only where its weights
        are there too (a source network kept by its record and bank alone trains again where its weights are used).
        Returns the run's results, or with ``jobs`` a future of them."""
        settings = self.settings(output_dir, **options)
        config = make_config(**settings) if self.resume or read_back else None
        if config is not None and not self._stale(settings.get("filters"), output_dir):
            done = finished_run(output_dir, run_identity(config))
            if done is not None and needs_weights and not (output_dir / WEIGHTS_NAME).is_file():
                _logger.info("%s: finished before, but its weights are not kept: training it again", output_dir)
                done = None
            if done is not None and self._injects_as_recorded(config, done, output_dir):
                self.reused += 1
                _logger.info("%s: finished before with the same configuration, read back", output_dir)
                return done
        if config is not None and _resumable(output_dir, run_identity(config)):
            settings["resume_from_checkpoint"] = "latest"
            _logger.info("%s: continuing %s from its last checkpoint", self.experiment, output_dir)
        else:
            _logger.info("%s: training %s", self.experiment, output_dir)
        if self.pool is not None:
            future = self.pool.submit(_train_in_worker, self.datasets, self.filters, settings)
            self.submitted += 1
            future.add_done_callback(self._log_finished)
            return future
        return _finished(train_transfer(extra_datasets=self.datasets, extra_filters=self.filters, **settings))

    def _injects_as_recorded(self, config: Any, done: Mapping[str, Any], output_dir: Path) -> bool:
        """Whether the filters of the run that finished in ``output_dir`` land today where they landed then. A mapping
        rule that changed between two invocations changes no configuration, so the run's identity cannot tell; its
        recorded ``filters.injected`` can. A run recorded under other rules trains again, and says why."""
        recorded = (done.get("filters") or {}).get("injected")
        if not recorded:  # from scratch injects nothing
            return True
        now = injection_plan(config, num_labels=RunResults.from_dict(done).num_labels, extra_filters=self.filters)
        then, today = ({e["target"]: e for e in plan} for plan in (recorded, now))
        if then == today:
            return True
        differ = sorted(t for t in then.keys() | today.keys() if then.get(t) != today.get(t))
        first = differ[0]
        _logger.warning("%s: finished before, but today's mapping rules inject its filters otherwise (%d of %d targets "
                        "differ; %s took %s then, %s now): training it again", output_dir, len(differ),
                        len(then.keys() | today.keys()), first, (then.get(first) or {}).get("source"),
                        (today.get(first) or {}).get("source"))  # fmt: skip
        return False

    def _log_finished(self, future: Future) -> None:
        """A worker's run ended: one line with its accuracy, time and the count (the workers show no progress bars,
        which would interleave in one log)."""
        self.finished += 1
        if future.cancelled() or future.exception() is not None:
            return  # :func:`_wait` raises it where the results are read
        run = RunResults.from_dict(future.result())
        _logger.info("%s: finished %s: accuracy %.4f, %.0f s of training (%d of %d submitted)", self.experiment,
                     run.output_dir, run.final.accuracy, run.train_time_s, self.finished, self.submitted)  # fmt: skip

    def cell(self, group: str, label: str, *, x: float | None = None, seeds: Sequence[int] | None = None,
             pair: str | None = None, source_seed: int | None = None, **options: Any) -> None:  # fmt: skip
        """Every seed (of the scale, or ``seeds``) of one cell of the grid. The learning rate is the config's for this
        dataset and ``label`` where it names one. ``pair`` names the from-scratch cell this one is compared with
        (default: the dataset's and model's). ``source_seed`` is the source network whose filters these runs use
        (:meth:`Scale.source_groups`): a cell over several sources is called once per source, with its seeds, and
        under the scale's ``source_seeds`` each run records it."""
        chosen = self.config.learning_rate(group, label)
        if chosen is None:
            chosen = self.config.learning_rate(options["dataset_name"], label)
        if chosen is not None and "learning_rate" not in options:
            options["learning_rate"] = chosen
        rate = options.get("learning_rate", self.scale.learning_rate)
        for seed in self.scale.seeds if seeds is None else seeds:
            folder = self.out_dir / "runs" / f"{slugify(group)}__{slugify(label)}__seed{seed}"
            record = {"group": group, "label": label, "x": x, "seed": seed, "dataset": options["dataset_name"],
                      "model": options.get("model", self.config.model), "filters": options.get("filters", "none"),
                      "learning_rate": rate}  # fmt: skip
            if pair is not None:
                record["pair"] = pair
            if source_seed is not None and self.scale.source_seeds is not None:
                record["source_seed"] = source_seed
            if self.retrain and not self._retrains(folder.name):
                self.pending.append((record, _Earlier(self._earlier_record(folder.name, record))))
                continue
            self.pending.append((record, self.train(folder, seed=seed, **options)))

    def _retrains(self, name: str) -> bool:
        """Whether the run folder ``name`` matches a ``retrain`` glob (and which did, to report globs that never do)."""
        matched = {glob for glob in self.retrain if fnmatch.fnmatchcase(name, glob)}
        self.matched |= matched
        return bool(matched)

    def _earlier_record(self, name: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """The earlier record of the run ``name``, which must be the run the cell ``record`` asks for now."""
        earlier = self.earlier.get(name)
        if earlier is None:
            raise TrainingConfigError(
                f"The run {name!r} matches no --retrain glob ({', '.join(self.retrain)}) and the earlier results hold "
                "no record of it: add a glob that matches it, or give the results.json that recorded it."
            )
        # filters inside the experiment's folder (a source network's bank) compare by their place in it
        folders = (str(Path(earlier["run"]).parent.parent), str(self.out_dir))
        differ = [key for key in ("group", "label", "seed", "dataset", "model", "filters", "learning_rate")
                  if _comparable(key, earlier.get(key), folders[0]) != _comparable(key, record.get(key), folders[1])]
        if differ:
            raise TrainingConfigError(
                f"The earlier record of {name!r} is another run: "
                + "; ".join(f"{k} {earlier.get(k)!r} there, {record.get(k)!r} now" for k in differ)
                + ". Add a --retrain glob that matches it to train it under the config now."
            )
        self.earlier_read += 1
        self.earlier_labels.add(earlier["label"])
        return dict(earlier)

    def unmatched_globs(self) -> list[str]:
        """The ``retrain`` globs that matched no run of the grid (a typo retrains nothing)."""
        return [glob for glob in self.retrain if glob not in self.matched]

    def results(self) -> list[dict[str, Any]]:
        """One record per run, in the order the cells were given (waiting for runs still training)."""
        records = []
        for record, result in self.pending:
            if isinstance(result, _Earlier):
                records.append({**record, **result.record})  # as measured then
                continue
            run = RunResults.from_dict(_wait(result) if isinstance(result, Future) else result)
            records.append({
                **record,
                "accuracy": run.final.accuracy, "eval_loss": run.final.eval_loss, "train_loss": run.final.train_loss,
                "num_labels": run.num_labels, "eval_split": run.eval_split, "train_time_s": run.train_time_s,
                "trainable_percent": run.trainable_percent, "run": run.output_dir, "history": run.accuracy_history,
                "steps": run.completed_steps,
                "finished_at": _finished_at(run.output_dir),
                **learning_check(run),
            })  # fmt: skip
        return records

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def source_models(self, sources: Mapping[str, Mapping[str, Any]], *, source_seed: int | None = None,
                      weights: bool = False) -> dict[str, Path]:  # fmt: skip
        """Train source networks from scratch (name -> options), every parameter trainable, with one seed
        (``source_seed``, one of :meth:`Scale.source_groups`; the scale's ``source_seed`` by default: their filters are
        the "given" filters of the transfer), side by side with ``jobs``; returns their output folders once all have
        finished. A source trains for its dataset's epochs where the scale names them, else ``source_epochs``, at the
        learning rate of the from-scratch arm on its dataset where the config names one (it is trained as that arm
        is). Under the scale's ``source_seeds`` each network's folder names its seed. ``weights``: the experiment
        uses the networks' weights beyond their depthwise banks (the layer split's pointwise control), so a network
        kept by its record and bank alone (``benchmarks/keep_run_records.py``) trains again."""
        s = self.scale
        seed = s.source_seed if source_seed is None else source_seed
        folders, futures = {}, []
        for name, options in sources.items():
            slug = slugify(name) if s.source_seeds is None else f"{slugify(name)}__source{seed}"
            folder = self.out_dir / "sources" / slug
            dataset = options.get("dataset_name")
            options = {"max_train_samples": s.source_train_samples,
                       "num_train_epochs": s.epochs(dataset, source=True), **options}  # fmt: skip
            rate = self.config.learning_rate(dataset, "from scratch")
            if rate is not None:
                options.setdefault("learning_rate", rate)
            reused = self.reused
            options.update(filters="none", trainable="all", seed=seed, max_train_steps=s.source_max_steps)
            futures.append(self.train(folder, read_back=self._copy_earlier_source(folder, options),
                                      needs_weights=weights, **options))  # fmt: skip
            if self.reused == reused:  # trained anew: the runs that use its filters are stale, the others are not
                self.stale_sources.add(folder)
            self.sources.add(folder)
            folders[name] = folder
        for future in futures:
            if isinstance(future, Future):
                _wait(future)
        return folders

    def _copy_earlier_source(self, folder: Path, options: Mapping[str, Any]) -> bool:
        """Under ``retrain``, copy the source network that finished with these ``options`` in the earlier experiment's
        folder into ``folder`` (where none has finished yet); returns whether ``folder`` now holds it, to be read
        back. Its weights, results and configuration come along, not its checkpoints."""
        if self.earlier_dir is None:
            return False
        identity = run_identity(make_config(**self.settings(folder, **options)))
        if finished_run(folder, identity) is not None:
            return True
        earlier = self.earlier_dir / "sources" / folder.name
        if earlier.resolve() == folder.resolve() or finished_run(earlier, identity) is None:
            return False
        shutil.copytree(earlier, folder, ignore=shutil.ignore_patterns(CHECKPOINTS_DIR), dirs_exist_ok=True)
        _logger.info("%s: source network %s copied from the earlier results' folder %s", self.experiment, folder.name,
                     earlier.parent.parent)  # fmt: skip
        return True

    def _stale(self, filters: Any, output_dir: Path) -> bool:
        """Whether the run in ``output_dir`` must train again under ``resume`` because its ``filters`` come from a
        source network (a bank folder inside its folder, or the pointwise control's ``pointwise:<folder>:<n>``) whose
        weights are not the ones the run used. A run records the SHA-256 of those weights (its filters'
        ``source_sha256``), so a source trained again to the same bytes (a fresh clone whose sources train again on
        the same machine) leaves it valid. A run recorded without that hash is stale where the source trained anew in
        this invocation, or finished after the run did (an earlier invocation stopped before retraining the run)."""
        text = str(filters)
        used = [folder for folder in self.sources
                if text == str(folder) or text.startswith(f"{folder}{os.sep}") or f":{folder}:" in text]  # fmt: skip
        run = output_dir / "results.json"
        if not used or not run.is_file():
            return False
        recorded = _json_text(run, "filters", "provenance", "source_sha256")  # the weights the run's filters came from
        now = {folder: source_weights_sha256(folder) for folder in used}
        if recorded is not None and None not in now.values():
            stale = [folder for folder in used if now[folder] != recorded]
            for folder in stale:
                _logger.warning("%s: its filters came from other weights of the source network %s (trained again "
                                "since, to other bytes): training it again", output_dir, folder.name)  # fmt: skip
            return bool(stale)
        if any(folder in self.stale_sources for folder in used):
            return True
        return any((folder / "results.json").is_file() and
                   (folder / "results.json").stat().st_mtime > run.stat().st_mtime for folder in used)  # fmt: skip

    def source_model(self, name: str, *, source_seed: int | None = None, weights: bool = False, **options: Any) -> Path:
        """:meth:`source_models` of one network."""
        return self.source_models({name: options}, source_seed=source_seed, weights=weights)[name]


class _Earlier:
    """A run's record read from an earlier ``results.json`` (see :class:`_Runner`'s ``retrain``)."""

    def __init__(self, record: dict[str, Any]):
        self.record = record


def _comparable(key: str, value: Any, experiment_dir: str) -> Any:
    """A record's value as two records of the same run compare it: a deprecated filters spelling is the same, and a
    path inside the experiment's folder (``experiment_dir``) is relative to it."""
    if key != "filters":
        return value
    value = canonical_filters(value)
    return value.replace(experiment_dir, "<experiment>") if isinstance(value, str) else value


def source_weights_sha256(folder: Path) -> str | None:
    """The SHA-256 of a finished network's weights: as its ``results.json`` records it, else of its weights file;
    ``None`` where neither is there.

    Example:
        >>> len(source_weights_sha256(Path("outputs/experiments/transfer-matrix/sources/tf_efficientnet_lite0-digits")))
        64
    """
    recorded = _json_text(folder / "results.json", "weights_sha256")
    if recorded is not None or not (folder / WEIGHTS_NAME).is_file():
        return recorded
    return sha256_file(folder / WEIGHTS_NAME)


def _json_text(path: Path, *keys: str) -> str | None:
    """The text at ``keys`` inside a JSON file (``None`` where the file, a key or the text is missing)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def _finished_at(output_dir: str | Path) -> float | None:
    """When a run finished: the time its ``results.json`` was written (POSIX seconds), which the analysis plan's
    commit must precede."""
    try:
        return (Path(output_dir) / "results.json").stat().st_mtime
    except OSError:
        return None


def _wait(future: Future) -> dict[str, Any]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerError(
            "A worker process died while training a run (killed, or out of memory). The runs that finished are "
            "kept: run the same command again with --resume, with fewer --jobs if memory ran out."
        ) from None


def _train_in_worker(datasets: Mapping[str, BuiltinDataset], filters: Mapping[str, Callable],
                     settings: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One run in a worker process of :class:`_Runner` (its logging as the parent's: warnings and up; no progress
    bar, since several workers share one log: the parent logs each run's end)."""
    logging.basicConfig(level=logging.WARNING)
    return _finished(train_transfer(extra_datasets=dict(datasets), extra_filters=dict(filters), disable_tqdm=True,
                                    **settings))  # fmt: skip


def _resumable(output_dir: Path, identity: Mapping[str, Any]) -> bool:
    """Whether ``output_dir`` holds a checkpoint of the run of this ``identity`` (:func:`run_identity`; an earlier
    invocation cut off mid-way), to continue from. A checkpoint of another configuration is not: the run starts over,
    and replaces it."""
    identity = {**identity, "num_processes": 1}  # a grid's run is one process
    try:
        return find_checkpoint("latest", output_dir, identity) is not None
    except TrainingConfigError:
        return False


def _finished(results: dict[str, Any]) -> dict[str, Any]:
    """A finished run's results, its checkpoints removed: they served only to continue it (each holds the model and
    the optimizer's state, tens of MB per run of a grid)."""
    shutil.rmtree(Path(results["output_dir"]) / CHECKPOINTS_DIR, ignore_errors=True)
    return results


def source_bank(folder: Path, *, name: str, dataset: str, model: str, license: str | None = None) -> Path:
    """Extract the depthwise bank of a trained source network into ``folder/bank-all``; returns the bank folder. The
    bank's licence is its training data's (``license``; the built-in datasets state theirs).

    Example:
        >>> source_bank(Path("outputs/experiments/transfer-matrix/sources/tf_efficientnet_lite0-digits"), name="source",
        ...             dataset="digits", model="tf_efficientnet_lite0")
        PosixPath('outputs/experiments/transfer-matrix/sources/tf_efficientnet_lite0-digits/bank-all')
    """
    out = folder / SOURCE_BANK_DIR
    if not (folder / WEIGHTS_NAME).is_file():
        return _kept_bank(folder, out)
    config = json.loads((folder / "config.json").read_text())
    known = BUILTIN_DATASETS.get(dataset)
    bank = extract_filters(model, weights=folder / WEIGHTS_NAME,
                           model_kwargs={"num_classes": config["num_classes"]},
                           source_dataset=dataset, source_license=license or (known.license if known else None),
                           source_weights=f"trained from scratch by masterkey ({folder.name})",
                           description=f"{model} trained from scratch on {dataset} ({name})")  # fmt: skip
    bank.save_pretrained(out)
    return out


def _kept_bank(folder: Path, out: Path) -> Path:
    """The bank kept beside a finished source network's record where its weights are not kept (a fresh clone; see
    ``benchmarks/keep_run_records.py``): it must have been extracted from the weights that record names."""
    recorded, extracted_from = source_weights_sha256(folder), _json_text(out / "config.json", "source_sha256")
    if recorded is None or extracted_from != recorded:
        raise TrainingConfigError(
            f"The source network {folder} has neither its weights ({WEIGHTS_NAME}) nor a bank extracted from the "
            f"weights its results.json names (bank {extracted_from or 'missing'}, weights {recorded or 'not recorded'})"
            ": remove the folder to train it again."
        )
    return out


def first_layers(bank: FilterBank, n: int, folder: Path) -> Path:
    """Save the first ``n`` kernels of ``bank`` (with its ``source*`` provenance) into ``folder/bank-<n>``; returns
    the bank folder.

    Example:
        >>> from masterkey import load_master_filters
        >>> first_layers(load_master_filters("imagenet-lite0"), 4, Path("outputs/lite0-first"))
        PosixPath('outputs/lite0-first/bank-4')
    """
    first = FilterBank.from_tensors({name: bank[name] for name in bank.names[:n]}, specs=bank.specs[:n],
                                    **{k: v for k, v in bank.config.items() if k.startswith("source")})  # fmt: skip
    out = folder / f"bank-{n}"
    first.save_pretrained(out)
    return out


def _model_epochs(run: _Runner, model: str, dataset: str) -> int:
    """A target architecture's epochs: the config's ``model_epochs`` where it names the model, else the dataset's."""
    return run.config.model_epochs.get(model, run.scale.epochs(dataset))
