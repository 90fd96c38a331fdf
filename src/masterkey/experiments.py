"""The Master Key Filters paper's experiments, runnable on any timm DS-CNN and dataset masterkey can train on.

Each experiment is a grid of training runs (cells x seeds) through :func:`masterkey.training.train_transfer`, so the
same code scales from the offline datasets on 2 CPU cores to GPUs with Accelerate; ``jobs`` trains several runs at a
time in worker processes. Every experiment writes, under ``out_dir/<experiment>/``: ``results.json`` (every run with
its learning check and per-epoch accuracy, the per-cell mean and standard deviation, the paired difference to
from-scratch with its 95% interval, the scale, the exact command), ``config.json`` (the :class:`ExperimentConfig`,
which ``--config`` takes back), ``<experiment>.png``, the learning curves, and the runs' own folders under ``runs/``.
The config picks the model, datasets and bank (defaults in brackets).

Two experiments choose the regime the others run in, scored on a validation split held out of the training data
(never the test split; no card shows their numbers):

- ``regime``: from scratch at each of ``pilot_resolutions`` for each of a dataset's ``pilot_epochs`` budgets; the
  chosen epochs go into the scale's ``dataset_epochs``.
- ``lr-sweep``: each main arm at each of ``sweep_learning_rates``; the choice goes into the config's
  ``learning_rates``.

The paper's four:

1. ``transfer-matrix``: frozen filters from several sources (the bank [ImageNet lite0], banks trained on each dataset
   [the built-in ones], the 8 universal keys, frozen random filters) on each dataset, against training from scratch.
2. ``layer-split``: Yosinski-style AnB / BnB: the first ``n`` depthwise layers of a network trained on classes A (or
   B) copied and frozen into a fresh network trained on B; and the same with the first ``n`` pointwise layers.
3. ``source-size``: banks trained on 10%, 30% and 100% of a source dataset, transferred frozen to a target.
4. ``across-architectures``: the bank [ImageNet ``tf_efficientnet_lite0``] injected into other families
   (``mapping="depth"``), against the same architecture from scratch and with frozen random filters.

Example:
    >>> from masterkey.experiments import run_experiment
    >>> results = run_experiment("source-size", scale="quick", out_dir="outputs/experiments")
    >>> results["summary"][0]["mean"]
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from torch import nn

from ._timm import create_model
from .bank import FilterBank
from .constants import EXPERIMENT_NAMES
from .errors import TrainingConfigError, WorkerError
from .extract import DepthwiseConv, extract_filters, find_depthwise_convs
from .hub import load_master_filters
from .inject import inject_pointwise
from .mapping import resolve_mapping
from .plans import AnalysisPlan, confirmatory_contrasts, mark_exploratory, plan_record
from .training import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    ResolvedFilters,
    load_image_dataset,
    make_config,
    slugify,
    train_transfer,
)
from .training.config import run_identity
from .training.filters import FITTED_PREFIX
from .training.outputs import finished_run

__all__ = ["Scale", "SCALES", "ExperimentConfig", "EXPERIMENTS", "run_experiment", "summarize"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    """How big every training run of an experiment is."""

    name: str
    seeds: tuple[int, ...]
    resolution: int
    num_train_epochs: int
    max_train_steps: int | None
    max_train_samples: int | None
    max_eval_samples: int | None
    batch_size: int
    learning_rate: float
    num_warmup_steps: int
    #: training of the source networks whose filters are transferred (one seed: they are the "given" filters)
    source_epochs: int
    source_max_steps: int | None
    source_train_samples: int | None
    #: how many target datasets / architectures an experiment trains on (``None``: all of them)
    max_targets: int | None = None
    #: layer-split copies n = 1 and then every ``N / layer_groups`` depthwise layers up to all N (0: n = 1 only)
    layer_groups: int = 4
    #: epochs per dataset (the regime pilot's choice), for the runs and the source networks on it; others take
    #: ``num_train_epochs`` (runs) and ``source_epochs`` (source networks)
    dataset_epochs: Mapping[str, int] | None = None
    #: training images per dataset for the runs on it (a random subset drawn with each run's seed; a smaller target is
    #: a harder one); others take ``max_train_samples``. The source networks keep ``source_train_samples``
    dataset_train_samples: Mapping[str, int] | None = None
    #: the seed the source networks train with. A run with the same seed starts its fresh layers from the very values
    #: the source's started from (same architecture, same initialisation), which favours layers frozen from it; a
    #: seed none of the runs uses (say 1000) removes that. 0 keeps the source networks trained so far.
    source_seed: int = 0
    #: the seed of the tuning runs (regime, lr-sweep); ``None``: the first of ``seeds``. A planned experiment tunes
    #: with a seed none of its confirmatory runs uses
    tuning_seed: int | None = None

    @property
    def tuning_seeds(self) -> tuple[int, ...]:
        """The seeds the tuning experiments (regime, lr-sweep) run: :attr:`tuning_seed`, else the first seed."""
        return self.seeds[:1] if self.tuning_seed is None else (self.tuning_seed,)

    def epochs(self, dataset: str | None, *, source: bool = False) -> int:
        """The epochs a run (or, with ``source``, a source network) trains on ``dataset``: the dataset's own where
        :attr:`dataset_epochs` names it, else :attr:`num_train_epochs` (:attr:`source_epochs`)."""
        return (self.dataset_epochs or {}).get(dataset, self.source_epochs if source else self.num_train_epochs)

    def train_samples(self, dataset: str | None) -> int | None:
        """The training images a run on ``dataset`` draws: the dataset's own number where
        :attr:`dataset_train_samples` names it, else :attr:`max_train_samples` (``None``: all)."""
        return (self.dataset_train_samples or {}).get(dataset, self.max_train_samples)


#: ``quick`` runs in the test suite (one step per run); ``small`` trains on 2,000 images per run at 32 px
#: (``docs/experiments-small``, an earlier regime); ``full`` on every image at 64 px (``tf_efficientnet_lite0``'s last
#: feature map 2x2), for the epochs the regime pilot chose per dataset (``docs/experiments/regime``: from scratch
#: plateaus at 20 epochs on digits and 6 on Animal-MNIST); the other datasets and the source networks train 6.
SCALES: dict[str, Scale] = {
    "quick": Scale("quick", seeds=(0, 1, 2), resolution=32, num_train_epochs=1, max_train_steps=1,
                   max_train_samples=16, max_eval_samples=16, batch_size=8, learning_rate=2e-3, num_warmup_steps=0,
                   source_epochs=1, source_max_steps=1, source_train_samples=32, max_targets=1,
                   layer_groups=0),
    "small": Scale("small", seeds=(0, 1, 2), resolution=32, num_train_epochs=3, max_train_steps=None,
                   max_train_samples=2000, max_eval_samples=500, batch_size=64, learning_rate=2e-3,
                   num_warmup_steps=10, source_epochs=4, source_max_steps=None, source_train_samples=2000),
    "full": Scale("full", seeds=(0, 1, 2), resolution=64, num_train_epochs=6, max_train_steps=None,
                  max_train_samples=None, max_eval_samples=None, batch_size=64, learning_rate=2e-3,
                  num_warmup_steps=50, source_epochs=6, source_max_steps=None, source_train_samples=None,
                  dataset_epochs={"digits": 20, "animal-mnist": 6}),
}  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    """What the experiments train: the architecture, the datasets, the transferred bank, and the :class:`Scale`.

    The defaults are the README's setting: our real ImageNet ``tf_efficientnet_lite0`` bank and the built-in offline
    datasets. Any dataset ``--dataset_name`` takes (a Hub id, a local folder) and any timm DS-CNN serve, except that
    ``split_dataset`` must be a built-in dataset. Every run writes its whole config as ``config.json`` beside its
    results; ``masterkey experiment NAME --config config.json`` runs it again.

    Example:
        >>> config = ExperimentConfig.from_dict({"model": "mobilenetv3_small_100", "scale": "small"})
        >>> run_experiment("transfer-matrix", config, out_dir="outputs/experiments")
    """

    scale: Scale = SCALES["quick"]
    #: the architecture trained by transfer-matrix, layer-split and source-size (the bank's own by default)
    model: str = "tf_efficientnet_lite0"
    #: the pretrained bank of transfer-matrix and across-architectures (anything ``load_master_filters`` takes)
    bank: str = "imagenet-lite0"
    #: how transfer-matrix maps the bank onto ``model``: ``exact``, or ``depth`` when the bank is another family's
    mapping: str = "exact"
    #: transfer-matrix: every dataset is a target, and a bank is trained on each
    datasets: tuple[str, ...] = ("digits", "animal-mnist")
    #: transfer-matrix: more banks, each an arm of its own (another model's by ``extra_mapping``: e.g. the ImageNet
    #: lite1 / lite2 banks in lite0 by depth, a stronger source of the same data), on ``extra_banks_datasets`` (all
    #: datasets when ``None``)
    extra_banks: tuple[str, ...] = ()
    extra_mapping: str = "depth"
    extra_banks_datasets: tuple[str, ...] | None = None
    #: transfer-matrix: dataset -> a longer budget in epochs at which from scratch and the bank train again (does the
    #: frozen bank only speed training up, or does it still win once scratch has converged?)
    long_epochs: Mapping[str, int] = field(default_factory=dict)
    #: transfer-matrix: the seeds of the ``long_epochs`` arms (the scale's when ``None``): more seeds for the question
    #: whose answer is a small difference
    long_seeds: tuple[int, ...] | None = None
    #: layer-split: the built-in dataset whose classes are split into halves A and B
    split_dataset: str = "animal-mnist"
    #: layer-split: which transfers are trained: ``AnB`` (layers of a network trained on the other half, A: do they
    #: generalise?) and ``BnB`` (layers of a network trained on B itself: the control for co-adaptation)
    split_arms: tuple[str, ...] = ("AnB", "BnB")
    #: source-size: banks trained on shares of ``source`` transfer to ``target``
    source: str = "animal-mnist"
    target: str = "digits"
    #: across-architectures: the families the bank is injected into
    architectures: tuple[str, ...] = ("convnext_atto", "mobilenetv3_small_100")
    #: across-architectures: the mapping rules compared, one arm each (``depth``, ``size``: see masterkey.mapping); a
    #: rule that gives an architecture the same injection as an earlier one (``size`` where the bank has none of its
    #: kernel sizes) is not trained twice
    mappings: tuple[str, ...] = ("depth",)
    #: across-architectures: more versions of an architecture, each ``{"model": name, "model_kwargs": {...}}`` (timm
    #: create_model arguments): from scratch and the bank again, the bank paired with the variant's own from-scratch
    #: cell (e.g. ConvNeXt with its layer scale starting at 1 instead of 1e-6)
    model_variants: tuple[Mapping[str, Any], ...] = ()
    #: cross-family: the target architectures, each trained from scratch, with frozen random kernels and with each of
    #: ``family_banks`` (``mapping="depth"``) on the ``target`` dataset
    family_targets: tuple[str, ...] = ("tf_efficientnet_lite0", "mobilenetv2_100", "mobilenetv3_large_100",
                                       "convnext_atto")
    family_banks: tuple[str, ...] = ("imagenet-lite0", "imagenet-mobilenetv2")
    #: cross-family: target -> the bank of its own family (the within-family control for the other banks)
    own_family: Mapping[str, str] = field(default_factory=lambda: {"tf_efficientnet_lite0": "imagenet-lite0",
                                                                   "mobilenetv2_100": "imagenet-mobilenetv2"})
    #: epochs per target architecture (the regime pilot's choice with ``tuning_models``); others take the dataset's
    model_epochs: Mapping[str, int] = field(default_factory=dict)
    #: regime and lr-sweep: tune each of these architectures on ``target`` (``()``: ``model`` on each dataset)
    tuning_models: tuple[str, ...] = ()
    #: lr-sweep: more banks swept, each an arm ``"<bank> (frozen)"`` (with ``tuning_models``: ``mapping="depth"``)
    sweep_banks: tuple[str, ...] = ()
    #: the analysis plan (a ``plan.json`` committed in this repository before any test-split run; see
    #: :mod:`masterkey.plans`): results record the version in force and mark what it does not name exploratory
    plan: str | None = None
    #: each arm's learning rate where the lr-sweep chose one: dataset (or, for cross-family, target architecture) ->
    #: cell label -> learning rate (the others take the scale's)
    learning_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: regime: the resolutions and, per dataset, the epoch budgets the pilot trains from scratch
    pilot_resolutions: tuple[int, ...] = (32, 64)
    pilot_epochs: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: {"digits": (10, 20, 40), "animal-mnist": (3, 6, 12)})
    #: lr-sweep: the learning rates each main arm tries, on the validation split carved from the training data
    sweep_learning_rates: tuple[float, ...] = (1e-3, 2e-3, 4e-3)
    #: lr-sweep: which main arms are swept, by kind: ``none`` (from scratch), ``bank``, ``fitted`` (the universal keys
    #: fitted to the bank), ``random``
    sweep_arms: tuple[str, ...] = ("none", "bank", "fitted", "random")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """A config from a mapping of its fields (missing ones keep their defaults). ``scale`` is a name of
        :data:`SCALES` or a mapping of :class:`Scale` fields; fields it leaves out come from the scale its ``name``
        names.

        Raises:
            TrainingConfigError: an unknown key or scale, or a value of the wrong kind.
        """
        if not isinstance(data, Mapping):
            raise TrainingConfigError(f"An experiment config is a JSON object of fields, not {type(data).__name__}.")
        _check_keys("experiment config", data, cls)
        values = dict(data)
        if "scale" in values:
            values["scale"] = _scale_from(values["scale"])
        for key in ("datasets", "architectures", "mappings", "pilot_resolutions", "sweep_learning_rates",
                    "sweep_arms", "extra_banks", "extra_banks_datasets", "model_variants", "split_arms", "long_seeds",
                    "family_targets", "family_banks", "tuning_models", "sweep_banks"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key]) if isinstance(values[key], (list, tuple)) else (values[key],)
        unknown_arms = sorted(set(values.get("split_arms", ())) - {"AnB", "BnB"})
        if unknown_arms:
            raise TrainingConfigError(f"Unknown split_arms {unknown_arms}; choose from AnB, BnB.")
        if "model_variants" in values:
            values["model_variants"] = tuple(dict(zip(("model", "model_kwargs"), variant_of(v), strict=True))
                                             for v in values["model_variants"])  # fmt: skip
        if "pilot_epochs" in values:
            values["pilot_epochs"] = {d: tuple(e) if isinstance(e, (list, tuple)) else (e,)
                                      for d, e in dict(values["pilot_epochs"]).items()}  # fmt: skip
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> ExperimentConfig:
        """A config from a JSON file (such as the ``config.json`` an experiment wrote)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TrainingConfigError(f"Cannot read the experiment config {str(path)!r}: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def learning_rate(self, dataset: str | None, label: str) -> float | None:
        """The learning rate :attr:`learning_rates` gives the arm ``label`` on ``dataset`` (``None``: the scale's)."""
        return self.learning_rates.get(dataset, {}).get(label)


def _check_keys(what: str, data: Mapping[str, Any], cls: type) -> None:
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainingConfigError(f"Unknown {what} key(s) {unknown}; known: {', '.join(known)}.")


def _scale_from(value: str | Scale | Mapping[str, Any]) -> Scale:
    if isinstance(value, Scale):
        return value
    if isinstance(value, str):
        if value not in SCALES:
            raise TrainingConfigError(f"Unknown scale {value!r}; choose one of {', '.join(SCALES)}.")
        return SCALES[value]
    if not isinstance(value, Mapping):
        raise TrainingConfigError(f"A scale is a name ({', '.join(SCALES)}) or an object of Scale fields.")
    _check_keys("scale", value, Scale)
    base = SCALES.get(value.get("name", ""))
    missing = [f.name for f in fields(Scale) if f.name not in value and f.default is MISSING]
    if base is None and missing:
        raise TrainingConfigError(f"The scale {value.get('name')!r} is not one of {', '.join(SCALES)}, so it needs "
                                  f"every field; missing: {', '.join(missing)}.")  # fmt: skip
    merged = {**(asdict(base) if base else {}), **value}
    merged["seeds"] = tuple(merged["seeds"])
    return Scale(**merged)


# -- running cells ---------------------------------------------------------------------------------------------------
class _Runner:
    """Runs training jobs for one experiment and records one row per run. Datasets and filters the experiment makes
    itself (class halves, pointwise controls) are objects it hands to each run, never entries of a global registry.

    With ``jobs`` > 1 the runs of the cells go to that many worker processes (spawned, one run each), so ``jobs``
    one-thread runs share a CPU's cores; :meth:`results` waits for them. Source networks are trained before the runs
    that use their filters (:meth:`source_models` waits for them)."""

    def __init__(self, experiment: str, config: ExperimentConfig, out_dir: Path, cpu_threads: int | None,
                 resume: bool, jobs: int = 1):  # fmt: skip
        self.experiment, self.config, self.out_dir, self.cpu_threads = experiment, config, out_dir, cpu_threads
        self.resume, self.reused = resume, 0
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
        )  # fmt: skip
        settings.update(options)
        return settings

    def train(self, output_dir: Path, **options: Any) -> Any:
        """One training run into ``output_dir``; ``options`` are :func:`train_transfer`'s keyword arguments. With
        ``resume``, a run that already finished there with the same configuration is not trained again. Returns the
        run's results, or with ``jobs`` a future of them."""
        settings = self.settings(output_dir, **options)
        if self.resume and not self._stale(settings.get("filters"), output_dir):
            done = finished_run(output_dir, run_identity(make_config(**settings)))
            if done is not None:
                self.reused += 1
                _logger.info("%s: finished before with the same configuration, read back", output_dir)
                return done
        _logger.info("%s: training %s", self.experiment, output_dir)
        if self.pool is not None:
            future = self.pool.submit(_train_in_worker, self.datasets, self.filters, settings)
            self.submitted += 1
            future.add_done_callback(self._log_finished)
            return future
        return train_transfer(extra_datasets=self.datasets, extra_filters=self.filters, **settings)

    def _log_finished(self, future: Future) -> None:
        """A worker's run ended: one line with its accuracy, time and the count (the workers show no progress bars,
        which would interleave in one log)."""
        self.finished += 1
        if future.cancelled() or future.exception() is not None:
            return  # :func:`_wait` raises it where the results are read
        result = future.result()
        _logger.info("%s: finished %s: accuracy %.4f, %.0f s of training (%d of %d submitted)", self.experiment,
                     result["output_dir"], result["final"]["accuracy"], result["train_time_s"], self.finished,
                     self.submitted)  # fmt: skip

    def cell(self, group: str, label: str, *, x: float | None = None, seeds: Sequence[int] | None = None,
             pair: str | None = None, **options: Any) -> None:  # fmt: skip
        """Every seed (of the scale, or ``seeds``) of one cell of the grid. The learning rate is the config's for this
        dataset and ``label`` where it names one. ``pair`` names the from-scratch cell this one is compared with
        (default: the dataset's and model's)."""
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
            self.pending.append((record, self.train(folder, seed=seed, **options)))

    def results(self) -> list[dict[str, Any]]:
        """One record per run, in the order the cells were given (waiting for runs still training)."""
        records = []
        for record, result in self.pending:
            result = _wait(result) if isinstance(result, Future) else result
            records.append({
                **record,
                "accuracy": result["final"]["accuracy"], "eval_loss": result["final"]["eval_loss"],
                "train_loss": result["final"]["train_loss"], "num_labels": result["dataset"]["num_labels"],
                "eval_split": result["dataset"].get("eval_split"), "train_time_s": result["train_time_s"],
                "trainable_percent": result["parameters"]["trainable_percent"], "run": result["output_dir"],
                "history": [h.get("accuracy") for h in result.get("epochs_history", [])],
                "finished_at": _finished_at(result["output_dir"]),
                **learning_check(result),
            })  # fmt: skip
        return records

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def source_models(self, sources: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
        """Train source networks from scratch (name -> options), every parameter trainable, one seed (the scale's
        ``source_seed``: their filters are the "given" filters of the transfer), side by side with ``jobs``; returns
        their output folders once all have finished. A source trains for its dataset's epochs where the scale names
        them, else ``source_epochs``, at the learning rate of the from-scratch arm on its dataset where the config
        names one (it is trained as that arm is)."""
        s = self.scale
        folders, futures = {}, []
        for name, options in sources.items():
            folder = self.out_dir / "sources" / slugify(name)
            dataset = options.get("dataset_name")
            options = {"max_train_samples": s.source_train_samples,
                       "num_train_epochs": s.epochs(dataset, source=True), **options}  # fmt: skip
            rate = self.config.learning_rate(dataset, "from scratch")
            if rate is not None:
                options.setdefault("learning_rate", rate)
            reused = self.reused
            futures.append(self.train(folder, filters="none", trainable="all", seed=s.source_seed,
                                      max_train_steps=s.source_max_steps, **options))  # fmt: skip
            if self.reused == reused:  # trained anew: the runs that use its filters are stale, the others are not
                self.stale_sources.add(folder)
            self.sources.add(folder)
            folders[name] = folder
        for future in futures:
            if isinstance(future, Future):
                _wait(future)
        return folders

    def _stale(self, filters: Any, output_dir: Path) -> bool:
        """Whether the run in ``output_dir`` must train again under ``resume`` because its ``filters`` come from a
        source network (a bank folder inside its folder, or the pointwise control's ``pointwise:<folder>:<n>``)
        trained anew in this invocation, or finished after the run did (in an earlier invocation that stopped
        before retraining the run)."""
        text = str(filters)
        used = [folder for folder in self.sources
                if text == str(folder) or text.startswith(f"{folder}{os.sep}") or f":{folder}:" in text]  # fmt: skip
        if any(folder in self.stale_sources for folder in used):
            return True
        run = output_dir / "results.json"
        return run.is_file() and any((folder / "results.json").is_file() and
                                     (folder / "results.json").stat().st_mtime > run.stat().st_mtime
                                     for folder in used)  # fmt: skip

    def source_model(self, name: str, **options: Any) -> Path:
        """:meth:`source_models` of one network."""
        return self.source_models({name: options})[name]


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
    return train_transfer(extra_datasets=dict(datasets), extra_filters=dict(filters), disable_tqdm=True, **settings)


def source_bank(folder: Path, *, name: str, dataset: str, model: str, license: str | None = None) -> Path:
    """Extract the depthwise bank of a trained source network into ``folder/bank-all``; returns the bank folder. The
    bank's licence is its training data's (``license``; the built-in datasets state theirs)."""
    config = json.loads((folder / "config.json").read_text())
    known = BUILTIN_DATASETS.get(dataset)
    bank = extract_filters(model, weights=folder / "model.safetensors",
                           model_kwargs={"num_classes": config["num_classes"]},
                           source_dataset=dataset, source_license=license or (known.license if known else None),
                           source_weights=f"trained from scratch by masterkey ({folder.name})",
                           description=f"{model} trained from scratch on {dataset} ({name})")  # fmt: skip
    out = folder / "bank-all"
    bank.save_pretrained(out)
    return out


def first_layers(bank: FilterBank, n: int, folder: Path) -> Path:
    """Save the first ``n`` kernels of ``bank`` (with its ``source*`` provenance) into ``folder/bank-<n>``; returns
    the bank folder."""
    first = FilterBank.from_tensors({name: bank[name] for name in bank.names[:n]}, specs=bank.specs[:n],
                                    **{k: v for k, v in bank.config.items() if k.startswith("source")})  # fmt: skip
    out = folder / f"bank-{n}"
    first.save_pretrained(out)
    return out


# -- the experiments -------------------------------------------------------------------------------------------------
def transfer_matrix(run: _Runner) -> dict[str, Any]:
    """Frozen filters from each source on each built-in dataset, against from scratch."""
    model, bank = run.config.model, run.config.bank
    trained = run.source_models({f"{model}-{d}": {"dataset_name": d} for d in run.config.datasets})
    own_banks = {d: str(source_bank(trained[f"{model}-{d}"], name="source", dataset=d, model=model))
                 for d in run.config.datasets}  # fmt: skip
    for dataset, folder in own_banks.items():  # kept beside the results: the cards are built from them
        load_master_filters(folder).save_pretrained(run.out_dir / "banks" / slugify(dataset))
    sources, extra = transfer_matrix_arms(run.config, own_banks)
    longer = main_arms(bank, ("none", "bank"))  # compared with each other at the longer budget
    targets = run.config.datasets[: run.scale.max_targets]
    extra_targets = [t for t in targets
                     if run.config.extra_banks_datasets is None or t in run.config.extra_banks_datasets]  # fmt: skip
    for target in targets:
        for label, filters in sources.items():
            run.cell(target, label, filters=filters, mapping=run.config.mapping, dataset_name=target)
        if target in run.config.long_epochs:
            epochs = run.config.long_epochs[target]
            for label, filters in longer.items():
                run.cell(f"{target}, {epochs} epochs", label, filters=filters, mapping=run.config.mapping,
                         num_train_epochs=epochs, dataset_name=target, pair=f"{epochs} epochs",
                         seeds=run.config.long_seeds)  # fmt: skip
        if target in extra_targets:
            for label, filters in extra.items():
                run.cell(target, label, filters=filters, mapping=run.config.extra_mapping, dataset_name=target)
    # paired by seed: the bank against frozen random filters (the filters, or freezing as such?), the 8 keys fitted
    # to it against the bank (do 8 filters do its work?), and each stronger (or other) source against the bank
    (fitted,) = main_arms(bank, ("fitted",))
    contrasts = [[[target, f"{bank} (frozen)"], [target, "random (frozen)"]] for target in targets]
    contrasts += [[[target, fitted], [target, f"{bank} (frozen)"]] for target in targets]
    contrasts += [[[target, label], [target, f"{bank} (frozen)"]] for target in extra_targets for label in extra]
    return {"sources": sources, "own_banks": own_banks, "extra_banks": extra,
            "long_epochs": dict(run.config.long_epochs), "contrasts": contrasts}


def transfer_matrix_arms(
    config: ExperimentConfig, own_banks: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The transfer matrix's arms under ``config``, cell label -> ``--filters``: the arms every target trains (from
    scratch, the bank, ``own_banks`` (dataset -> bank folder), the universal keys fitted and by channel, frozen random
    filters), and the ``extra_banks`` arms.

    Example:
        >>> sources, extra = transfer_matrix_arms(ExperimentConfig(), {"digits": "banks/digits"})
        >>> list(sources)[:3]
        ['from scratch', 'imagenet-lite0 (frozen)', 'digits bank (frozen)']
    """
    bank = config.bank
    sources = {**main_arms(bank, ("none", "bank")), **{f"{d} bank (frozen)": path for d, path in own_banks.items()},
               **main_arms(bank, ("fitted",)), "universal 8, key = channel mod 8 (frozen)": "universal-idealized",
               **main_arms(bank, ("random",))}  # fmt: skip
    extra = {f"{b} (frozen, mapping={config.extra_mapping})": b for b in config.extra_banks}
    return sources, extra


def main_arms(bank: str, kinds: Sequence[str] = ("none", "bank", "fitted", "random")) -> dict[str, str]:
    """The transfer matrix's main arms of ``kinds``, cell label -> ``--filters``: from scratch (``none``), the bank,
    the 8 universal keys ``fitted`` to it, frozen ``random`` filters (the lr-sweep tunes these; the labels are those
    of transfer-matrix).

    Raises:
        TrainingConfigError: an unknown kind.
    """
    arms = {"none": ("from scratch", "none"), "bank": (f"{bank} (frozen)", bank),
            "fitted": (f"universal 8 fitted to {bank} (frozen)", FITTED_PREFIX + bank),
            "random": ("random (frozen)", "random")}  # fmt: skip
    unknown = sorted(set(kinds) - set(arms))
    if unknown:
        raise TrainingConfigError(f"Unknown arm kind(s) {unknown} in sweep_arms; choose from {', '.join(arms)}.")
    return dict(arms[kind] for kind in arms if kind in kinds)


def regime(run: _Runner) -> dict[str, Any]:
    """The pilot that chooses the regime: each dataset from scratch (every parameter trainable) at each of
    ``pilot_resolutions`` and each of its ``pilot_epochs`` budgets, the first seed, scored on a validation split held
    out of the training data (never the test split). The chosen epochs go into the scale's ``dataset_epochs``."""
    seed = run.scale.tuning_seeds
    if run.config.tuning_models:
        dataset = run.config.target
        for model in run.config.tuning_models[: run.scale.max_targets]:
            for resolution in run.config.pilot_resolutions:
                for epochs in run.config.pilot_epochs.get(dataset, (run.scale.num_train_epochs,)):
                    run.cell(f"{model} {dataset} {resolution}px", f"{epochs} epochs", x=epochs, seeds=seed,
                             model=model, filters="none", trainable="all", resolution=resolution,
                             num_train_epochs=epochs, validation_from_train=True, dataset_name=dataset,
                             pair=f"{model} {dataset} {resolution}px {epochs}")  # fmt: skip
        return {"models": list(run.config.tuning_models), "dataset": dataset,
                "resolutions": list(run.config.pilot_resolutions),
                "epochs": {d: list(e) for d, e in run.config.pilot_epochs.items()}, "scored_on": "validation"}
    for dataset in run.config.datasets[: run.scale.max_targets]:
        for resolution in run.config.pilot_resolutions:
            for epochs in run.config.pilot_epochs.get(dataset, (run.scale.num_train_epochs,)):
                run.cell(f"{dataset} {resolution}px", f"{epochs} epochs", x=epochs, seeds=seed, filters="none",
                         trainable="all", resolution=resolution, num_train_epochs=epochs, validation_from_train=True,
                         dataset_name=dataset, pair=f"{dataset} {resolution}px {epochs}")  # fmt: skip
    return {"resolutions": list(run.config.pilot_resolutions),
            "epochs": {d: list(e) for d, e in run.config.pilot_epochs.items()}, "scored_on": "validation"}  # fmt: skip


def lr_sweep(run: _Runner) -> dict[str, Any]:
    """Each main arm (:func:`main_arms`) of each dataset at each of ``sweep_learning_rates``, in the scale's regime,
    the first seed, scored on a validation split held out of the training data (never the test split). The best
    rate per arm and dataset is in ``details["best"]``; the config's ``learning_rates`` takes it."""
    seed = run.scale.tuning_seeds
    arms = {**main_arms(run.config.bank, run.config.sweep_arms),
            **{f"{b} (frozen)": b for b in run.config.sweep_banks}}  # fmt: skip
    if run.config.tuning_models:
        dataset = run.config.target
        for model in run.config.tuning_models[: run.scale.max_targets]:
            for label, filters in arms.items():
                for rate in run.config.sweep_learning_rates:
                    run.cell(f"{model}: {label}", f"lr={rate:g}", x=rate, seeds=seed, model=model, filters=filters,
                             mapping="depth", learning_rate=rate, num_train_epochs=_model_epochs(run, model, dataset),
                             validation_from_train=True, dataset_name=dataset, pair=f"{model} lr={rate:g}")  # fmt: skip
        return {"models": list(run.config.tuning_models), "dataset": dataset, "arms": list(arms),
                "learning_rates": list(run.config.sweep_learning_rates), "scored_on": "validation"}
    for dataset in run.config.datasets[: run.scale.max_targets]:
        for label, filters in arms.items():
            for rate in run.config.sweep_learning_rates:
                run.cell(f"{dataset}: {label}", f"lr={rate:g}", x=rate, seeds=seed, filters=filters,
                         mapping=run.config.mapping, learning_rate=rate, validation_from_train=True,
                         dataset_name=dataset, pair=f"lr={rate:g}")  # fmt: skip
    return {"arms": list(arms), "learning_rates": list(run.config.sweep_learning_rates), "scored_on": "validation"}


def best_learning_rates(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """The lr-sweep's choice: dataset (or, when the sweep tuned ``tuning_models``, architecture) -> arm -> the
    learning rate of the highest validation accuracy (mean over the seeds run; ties to the smaller rate), in the form
    ``ExperimentConfig.learning_rates`` takes.

    Example:
        >>> best_learning_rates(run_experiment("lr-sweep", scale="quick")["runs"])
        {'digits': {'from scratch': 0.004, ...}, ...}
    """
    scores: dict[tuple[str, str, float], list[float]] = {}
    for r in records:
        key, arm = r["group"].split(": ", 1)  # "<dataset or architecture>: <arm>"
        scores.setdefault((key, arm, r["learning_rate"]), []).append(r["accuracy"])
    best: dict[str, dict[str, tuple[float, float]]] = {}
    for (dataset, arm, rate), accuracies in sorted(scores.items(), key=lambda item: item[0][2]):
        score = float(np.mean(accuracies))
        if arm not in best.setdefault(dataset, {}) or score > best[dataset][arm][0]:
            best[dataset][arm] = (score, rate)
    return {dataset: {arm: rate for arm, (_, rate) in arms.items()} for dataset, arms in best.items()}


def split_classes(dataset: str) -> tuple[BuiltinDataset, BuiltinDataset]:
    """Two datasets holding the first and the second half of the built-in ``dataset``'s classes (labels renumbered
    from 0), named ``<dataset>-A`` and ``<dataset>-B``."""
    if dataset not in BUILTIN_DATASETS:
        raise TrainingConfigError(
            f"layer-split splits a built-in dataset's classes; {dataset!r} is not one of "
            f"{', '.join(BUILTIN_DATASETS)}. Pick a built-in split_dataset."
        )
    parent = BUILTIN_DATASETS[dataset]
    half = len(parent.class_names) // 2
    halves = []
    for tag, classes in (("A", range(half)), ("B", range(half, len(parent.class_names)))):
        halves.append(BuiltinDataset(
            name=f"{dataset}-{tag}", class_names=tuple(parent.class_names[c] for c in classes),
            load=functools.partial(_class_subset, parent.load, tuple(classes)),
            description=f"classes {classes.start}-{classes.stop - 1} of {dataset}", source=parent.source,
            license=parent.license,
        ))  # fmt: skip
    return halves[0], halves[1]


def _class_subset(load: Callable[[], tuple[np.ndarray, np.ndarray]], classes: tuple[int, ...]):
    images, labels = load()
    keep = np.isin(labels, classes)
    return images[keep], np.searchsorted(np.array(classes), labels[keep])


def pointwise_filters(source_folder: Path, n_depthwise: int, *, bank: FilterBank) -> tuple[str, Callable]:
    """The pointwise control of the layer-split experiment as a ``--filters`` name and the function that resolves it:
    the pointwise (1x1) convs of a trained source network in the same first share of the network as its first
    ``n_depthwise`` depthwise convs, copied and frozen (:func:`masterkey.inject.inject_pointwise`); every other
    parameter, depthwise included, trains. ``bank`` (the source network's depthwise bank) records where the layers
    came from. Both are plain functions and partials, so a run in another process (``jobs``) receives them."""
    name = f"pointwise:{source_folder}:{n_depthwise}"
    return name, functools.partial(_resolve_pointwise, name, source_folder, n_depthwise, bank)


def _inject_pointwise(source_folder: Path, n_depthwise: int, model: nn.Module, *, strict: bool, freeze: bool,
                      trainable: str, mapping: str) -> nn.Module:  # fmt: skip
    return inject_pointwise(model, source_folder / "model.safetensors", first_depthwise=n_depthwise, strict=strict,
                            freeze=freeze, trainable=trainable, source=f"pointwise convs of {source_folder}")  # fmt: skip


def _resolve_pointwise(name: str, source_folder: Path, n_depthwise: int, bank: FilterBank,
                       model: nn.Module) -> ResolvedFilters:  # fmt: skip
    return ResolvedFilters(name, bank, inject=functools.partial(_inject_pointwise, source_folder, n_depthwise))


def layer_split(run: _Runner) -> dict[str, Any]:
    """AnB / BnB with the first n depthwise layers copied and frozen, and the pointwise control."""
    model = run.config.model
    halves = split_classes(run.config.split_dataset)
    run.datasets.update({half.name: half for half in halves})
    half_a, half_b = (half.name for half in halves)
    origins = {tag: half for tag, half in (("AnB", half_a), ("BnB", half_b)) if tag in run.config.split_arms}
    trained = run.source_models({f"{model}-{half}": {"dataset_name": half} for half in origins.values()})
    base = {half: trained[f"{model}-{half}"] for half in origins.values()}
    n_layers = len(find_depthwise_convs(create_model(model)))
    groups = run.scale.layer_groups
    steps = sorted({1, *(round(i * n_layers / groups) for i in range(1, groups + 1))})
    banks = {half: load_master_filters(source_bank(base[half], name=half, dataset=half, model=model)) for half in base}
    run.cell("from scratch on B", "n=0", x=0, filters="none", dataset_name=half_b)  # n = 0 is the same for every arm
    for n in steps:
        for tag, origin in origins.items():
            dw = str(first_layers(banks[origin], n, base[origin]))
            pw, resolve = pointwise_filters(base[origin], n, bank=banks[origin])
            run.filters[pw] = resolve
            run.cell(f"{tag} depthwise", f"n={n}", x=n, filters=dw, no_strict=True, dataset_name=half_b)
            run.cell(f"{tag} pointwise", f"n={n}", x=n, filters=pw, no_strict=True, dataset_name=half_b)
    # the pointwise control, paired by seed; and, with both arms, AnB against BnB (co-adaptation)
    contrasts = [[[f"{tag} depthwise", f"n={n}"], [f"{tag} pointwise", f"n={n}"]] for n in steps for tag in origins]
    if len(origins) == 2:
        contrasts += [[[f"AnB {kind}", f"n={n}"], [f"BnB {kind}", f"n={n}"]]
                      for n in steps for kind in ("depthwise", "pointwise")]  # fmt: skip
    return {"halves": [half_a, half_b], "layers": n_layers, "n": steps, "contrasts": contrasts}


def source_size_arms(config: ExperimentConfig) -> dict[str, tuple[float, int]]:
    """source-size's banks, cell label -> (share, images): the share of the source's training images (10%, 30% and
    100% of them, or of the scale's ``source_train_samples``) its source network trains on, and how many that is.

    Example:
        >>> source_size_arms(ExperimentConfig.from_dict({"scale": "full"}))
        {'10% of animal-mnist (800 images)': (0.1, 800), '30% of animal-mnist (2400 images)': (0.3, 2400), ...}
    """
    n_train = len(load_image_dataset(config.source)["train"])
    cap = config.scale.source_train_samples
    full = min(n_train, cap) if cap else n_train
    counts = {fraction: max(1, round(fraction * full)) for fraction in (0.1, 0.3, 1.0)}
    return {f"{fraction:.0%} of {config.source} ({count} images)": (fraction, count)
            for fraction, count in counts.items()}  # fmt: skip


def source_size(run: _Runner) -> dict[str, Any]:
    """Banks trained on 10%, 30% and 100% of the source's training examples, frozen on the target (on the scale's
    ``dataset_train_samples`` of it where it names the target: a harder target)."""
    model, source, target = run.config.model, run.config.source, run.config.target
    arms = source_size_arms(run.config)
    subset = (run.scale.dataset_train_samples or {}).get(target)
    group = target if subset is None else f"{target}, {subset} training images"
    # before the sources: it does not use their filters, so --resume keeps it even when they are trained anew
    run.cell(group, "from scratch", x=0.0, filters="none", dataset_name=target)
    trained = run.source_models({f"{model}-{source}-{fraction:g}": {"dataset_name": source, "max_train_samples": count}
                                 for fraction, count in arms.values()})  # fmt: skip
    for label, (fraction, _) in arms.items():
        folder = trained[f"{model}-{source}-{fraction:g}"]
        bank = source_bank(folder, name=f"{fraction:.0%} of {source}", dataset=source, model=model)
        run.cell(group, label, x=fraction, filters=str(bank), dataset_name=target)
    return {"source": source, "target": target, "source_train_images": max(c for _, c in arms.values()),
            "target_train_images": subset}


def across_architectures(run: _Runner) -> dict[str, Any]:
    """The bank (the ImageNet lite0 bank by default) in other families, against scratch and frozen random filters
    (and, in families with 7x7 kernels, the learned and idealized universal keys), on the ``target`` dataset; then
    each of the config's ``model_variants`` against its own from-scratch cell."""
    targets, dataset, bank = run.config.architectures, run.config.target, run.config.bank
    source = load_master_filters(bank)
    trained: dict[str, list[str]] = {}
    for model in targets[: run.scale.max_targets]:
        convs = find_depthwise_convs(create_model(model), feature_strides=True)
        mappings = distinct_mappings(source, convs, run.config.mappings)
        cells = {"from scratch": ("none", "depth"),
                 **{f"{bank} (frozen, mapping={m})": (bank, m) for m in mappings},
                 "random (frozen)": ("random", "depth")}  # fmt: skip
        # the learned keys exist at 7x7 only: where the model's kernels are 7x7 both key sets are compared
        sevens = {c.spec.kernel_size for c in convs} == {(7, 7)}
        universal = {"universal learned 8 (frozen)": ("universal-learned", "depth"),
                     "universal idealized 8 (frozen)": ("universal-idealized", "depth")} if sevens else {}  # fmt: skip
        for label, (filters, mapping) in {**cells, **universal}.items():
            run.cell(model, label, model=model, filters=filters, mapping=mapping, dataset_name=dataset)
        trained[model] = list(mappings)
    variants = []
    for variant in run.config.model_variants:
        model, kwargs = variant_of(variant)
        tag = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        for label, filters in (("from scratch", "none"), (f"{bank} (frozen, mapping=depth)", bank)):
            run.cell(f"{model} ({tag})", label, model=model, model_kwargs=kwargs, filters=filters, mapping="depth",
                     dataset_name=dataset, pair=tag)  # fmt: skip
        variants.append({"model": model, "model_kwargs": kwargs})
    # paired by seed: each mapping rule against frozen random filters, and each further rule against the first
    contrasts = [[[model, f"{bank} (frozen, mapping={m})"], [model, "random (frozen)"]]
                 for model, rules in trained.items() for m in rules]  # fmt: skip
    contrasts += [[[model, f"{bank} (frozen, mapping={m})"], [model, f"{bank} (frozen, mapping={rules[0]})"]]
                  for model, rules in trained.items() for m in rules[1:]]  # fmt: skip
    return {"targets": list(targets), "dataset": dataset, "mappings": list(run.config.mappings),
            "mappings_trained": trained, "model_variants": variants, "contrasts": contrasts}  # fmt: skip


def cross_family(run: _Runner) -> dict[str, Any]:
    """Real banks across families: each of ``family_targets`` on the ``target`` dataset from scratch, with frozen
    random kernels, and with each of ``family_banks`` frozen (``mapping="depth"``: by structure, so a bank of the
    target's own architecture lands one to one), each target for its own epochs (``model_epochs``, the pilot's
    choice) at each arm's swept rate (``learning_rates`` by target). A bank of the target's own family
    (``own_family``) is the within-family control for the others. The contrasts: each bank minus frozen random and
    minus scratch, and the own-family bank minus each other bank."""
    dataset, banks = run.config.target, run.config.family_banks
    contrasts = []
    for model in run.config.family_targets[: run.scale.max_targets]:
        epochs = _model_epochs(run, model, dataset)
        arms = {"from scratch": "none", "random (frozen)": "random", **{f"{b} (frozen)": b for b in banks}}
        for label, filters in arms.items():
            run.cell(model, label, model=model, filters=filters, mapping="depth", num_train_epochs=epochs,
                     dataset_name=dataset, pair=model)  # fmt: skip
        for bank in banks:
            contrasts += [[[model, f"{bank} (frozen)"], [model, "random (frozen)"]],
                          [[model, f"{bank} (frozen)"], [model, "from scratch"]]]  # fmt: skip
        own = run.config.own_family.get(model)
        if own in banks:
            contrasts += [[[model, f"{own} (frozen)"], [model, f"{other} (frozen)"]] for other in banks if other != own]
    return {"targets": list(run.config.family_targets), "banks": list(banks), "dataset": dataset,
            "own_family": dict(run.config.own_family), "epochs": {m: _model_epochs(run, m, dataset)
                                                                  for m in run.config.family_targets},
            "contrasts": contrasts}  # fmt: skip


def _model_epochs(run: _Runner, model: str, dataset: str) -> int:
    """A target architecture's epochs: the config's ``model_epochs`` where it names the model, else the dataset's."""
    return run.config.model_epochs.get(model, run.scale.epochs(dataset))


def chosen_budgets(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The regime pilot's choice per architecture (a pilot with ``tuning_models``): the smallest budget at which
    from scratch converged (:func:`learning_check`: its accuracy rose by less than ``CONVERGED_RISE`` over its last
    two epochs), else the largest budget tried, in the form ``ExperimentConfig.model_epochs`` takes.

    Example:
        >>> chosen_budgets(run_experiment("regime", {"tuning_models": ["convnext_atto"]})["runs"])
        {'convnext_atto': 12}
    """
    budgets: dict[str, list[tuple[int, bool]]] = {}
    for r in records:
        budgets.setdefault(r["model"], []).append((int(r["x"]), bool(r.get("converged"))))
    return {model: min((e for e, converged in tried if converged), default=max(e for e, _ in tried))
            for model, tried in budgets.items()}  # fmt: skip


def distinct_mappings(bank: FilterBank, targets: list[DepthwiseConv], mappings: Sequence[str]) -> tuple[str, ...]:
    """The mapping rules of ``mappings`` that inject ``bank`` into ``targets`` differently: a rule whose plan (each
    target's source entry) equals an earlier rule's is left out, as ``size`` is where the bank has none of the
    targets' kernel sizes and falls back to ``depth``.

    Example:
        >>> distinct_mappings(load_master_filters("imagenet-lite0"), find_depthwise_convs(convnext), ("depth", "size"))
        ('depth',)
    """
    first: dict[tuple, str] = {}  # plan -> the first rule that gives it
    for mapping in mappings:
        plan = tuple(sorted(resolve_mapping(bank, targets, mapping).items()))
        if plan in first:
            _logger.info("mapping=%s injects as mapping=%s does here: one arm", mapping, first[plan])
            continue
        first[plan] = mapping
    return tuple(first.values())


def variant_of(entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model, model_kwargs)`` of one ``model_variants`` entry, checked."""
    if not isinstance(entry, Mapping) or set(entry) != {"model", "model_kwargs"} or not isinstance(
            entry["model_kwargs"], Mapping) or not entry["model_kwargs"]:  # fmt: skip
        raise TrainingConfigError(f"A model_variants entry is {{'model': NAME, 'model_kwargs': {{...}}}} with at least "
                                  f"one create_model argument, got {entry!r}.")  # fmt: skip
    return str(entry["model"]), dict(entry["model_kwargs"])


#: The experiments that choose the regime and the learning rates, scored on a validation split held out of the training
#: data: their numbers are never test results (no card shows them).
TUNING_EXPERIMENTS = ("regime", "lr-sweep")
#: The experiments, in the order of :data:`masterkey.constants.EXPERIMENT_NAMES` (the command line's choices).
EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = dict(
    zip(EXPERIMENT_NAMES,
        (regime, lr_sweep, transfer_matrix, layer_split, source_size, across_architectures, cross_family),
        strict=True)
)


# -- results ---------------------------------------------------------------------------------------------------------
#: A run learned when its final train loss is below this share of chance's loss ln K ...
LEARNED_LOSS_SHARE = 0.8
#: ... and its accuracy lies this many binomial standard errors above chance (1 / K).
LEARNED_SIGMAS = 3.0
#: A run converged when its accuracy rose by less than this over its last two epochs.
CONVERGED_RISE = 0.01


def learning_check(result: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a training run (its ``results.json``) learned and converged, with the numbers it was judged on.

    It **learned** when its final train loss is below ``LEARNED_LOSS_SHARE * ln K`` (chance's loss) and its accuracy
    is ``LEARNED_SIGMAS`` binomial standard errors above chance ``1/K``; it **converged** when its accuracy rose by
    less than ``CONVERGED_RISE`` over its last two epochs (``None`` with a single epoch: unknown).

    Example:
        >>> learning_check(train_transfer(...))
        {'chance': 0.1, 'chance_loss': 2.302..., 'learned': True, 'converged': False, ...}
    """
    classes = result["dataset"]["num_labels"]
    n_eval = max(1, result["final"].get("num_eval_examples") or result["dataset"].get("num_eval") or 1)
    chance, chance_loss = 1.0 / classes, math.log(classes)
    final = result["final"]
    history = [h["accuracy"] for h in result.get("epochs_history", []) if h.get("accuracy") is not None]
    margin = LEARNED_SIGMAS * math.sqrt(chance * (1 - chance) / n_eval)
    learned = bool(final["train_loss"] < LEARNED_LOSS_SHARE * chance_loss and final["accuracy"] > chance + margin)
    rise = history[-1] - history[-3] if len(history) >= 3 else (history[-1] - history[0] if len(history) == 2 else None)
    return {"chance": chance, "chance_loss": chance_loss, "learned": learned,
            "converged": None if rise is None else bool(rise < CONVERGED_RISE), "last_rise": rise}  # fmt: skip


def paired_difference(differences: Sequence[float]) -> dict[str, Any]:
    """Paired differences (one per seed) summed up: their mean and 95% t interval (the mean itself with one pair), how
    many pairs, and ``real`` when the interval excludes 0 (never with a single pair)."""
    values = np.asarray(differences, dtype=float)
    mean = low = high = float(values.mean())
    if len(values) > 1:
        half = float(scipy_stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
        low, high = mean - half, mean + half
    return {"mean": mean, "low": low, "high": high, "pairs": len(values),
            "real": bool(len(values) > 1 and (low > 0 or high < 0))}  # fmt: skip


def format_difference(difference: Mapping[str, Any] | None) -> str:
    """A :func:`paired_difference` as ``+0.021 [+0.003, +0.040]``, bold where it is real; empty for ``None``."""
    if difference is None:
        return ""
    text = f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"
    return f"**{text}**" if difference["real"] else text


def summarize(
    records: Sequence[dict[str, Any]], *, chance: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Per (group, label), in first-seen order: accuracy mean, standard deviation (ddof=1) and count; how many runs
    learned and converged (:func:`learning_check`); chance (recorded, else from ``chance``: dataset -> 1/K); and,
    beside the from-scratch cell of the same dataset and model, the paired difference to it (same seed: same initial
    weights and data order), its mean and 95% interval, ``real`` when the interval excludes 0."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        cells.setdefault((r["group"], r["label"]), []).append(r)
    def pair(row: Mapping[str, Any]) -> tuple[str, ...]:  # the from-scratch cell a cell is compared with
        return (row["dataset"], row["model"], row.get("pair", ""))

    scratch = {pair(rows[0]): {r["seed"]: r["accuracy"] for r in rows}
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
        pairs = [(r["accuracy"] - base[r["seed"]]) for r in rows if r["seed"] in base]
        if rows[0]["filters"] != "none" and pairs:
            row["vs_scratch"] = paired_difference(pairs)
        summary.append(row)
    return summary


def paired_contrasts(records: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[Sequence[str]]]) -> list[dict[str, Any]]:
    """Cell A minus cell B for each ``[[group_a, label_a], [group_b, label_b]]`` of ``pairs``, paired by seed (the
    same seed: the same initial weights and data order), as :func:`summarize` does against from scratch: the mean,
    its 95% interval, how many seeds both cells have, and ``real`` when the interval excludes 0. A pair whose cells
    share no seed is left out.

    Example:
        >>> paired_contrasts(results["runs"], [[["AnB depthwise", "n=16"], ["AnB pointwise", "n=16"]]])
        [{'a': 'AnB depthwise, n=16', 'b': 'AnB pointwise, n=16', 'mean': 0.212, 'low': -0.182, ...}]
    """
    accuracy: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        accuracy.setdefault((r["group"], r["label"]), {})[r["seed"]] = r["accuracy"]
    out = []
    for a, b in pairs:
        cell_a, cell_b = accuracy.get(tuple(a), {}), accuracy.get(tuple(b), {})
        seeds = sorted(set(cell_a) & set(cell_b))
        if not seeds:
            continue
        out.append({"a": ", ".join(a), "b": ", ".join(b),
                    **paired_difference([cell_a[s] - cell_b[s] for s in seeds])})  # fmt: skip
    return out


def contrast_table(contrasts: Sequence[Mapping[str, Any]]) -> str:
    """:func:`paired_contrasts` as a Markdown table (the interval bold where it excludes 0); empty without any."""
    if not contrasts:
        return ""
    lines = ["| cell A | minus cell B | Δ (A − B), 95% CI | seeds |", "|---|---|---|---|"]
    for c in contrasts:
        b = f"{c['b']} (exploratory)" if c.get("exploratory") else c["b"]
        lines.append(f"| {c['a']} | {b} | {format_difference(c)} | {c['pairs']} |")
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


def _apply_plan(
    experiment: str, config: ExperimentConfig, records: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The analysis plan's record (:func:`masterkey.plans.plan_record`) and ``records`` marked exploratory where the
    plan in force does not name their cell or seed; ``(None, records)`` for an experiment without a plan, or whose
    config's plan is another experiment's (the regime pilot and lr-sweep that tune a planned experiment)."""
    if config.plan is None or _plan_experiment(config.plan) != experiment:
        return None, records  # a plan names its experiment: the tuning runs before it are not its subject
    # a tuning run scores on images held out of the training split; every other run is a result
    tested = [r["finished_at"] for r in records if "held out" not in str(r.get("eval_split")) and r.get("finished_at")]
    record = plan_record(config.plan, first_result_at=min(tested, default=None))
    if record["edited_after"]:
        _logger.warning("The analysis plan %s was edited after its version in force (%s): the edits are reported in "
                        "results.json and not used.", config.plan, "; ".join(record["edited_after"]))  # fmt: skip
    return record, mark_exploratory(records, record["plan"])


def _plan_experiment(path: str | Path) -> str | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingConfigError(f"Cannot read the analysis plan {str(path)!r}: {e}") from None
    return data.get("experiment") if isinstance(data, Mapping) else None


def confirmatory_table(rows: Sequence[Mapping[str, Any]], plan: AnalysisPlan | None) -> str:
    """The plan's primary contrasts (:func:`masterkey.plans.confirmatory_contrasts`) as a Markdown table: the mean
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
                     f"{'**yes**' if r['holds'] else 'no'} | {r['pairs']} |")  # fmt: skip
    return "\n".join(lines)


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
    if all(r["x"] is not None for r in summary):  # curves against x, the from-scratch cells as reference lines
        curves = [g for g in groups if any(r["group"] == g and (tuning or r["filters"] != "none") for r in summary)]
        xs_all = sorted({r["x"] for r in summary})
        step = min((b - a for a, b in zip(xs_all, xs_all[1:])), default=1.0)
        for i, group in enumerate(curves):
            rows = [r for r in summary if r["group"] == group and (tuning or r["filters"] != "none")]
            offset = 0.0 if tuning else (i - (len(curves) - 1) / 2) * 0.06 * step  # error bars stay readable
            ax.errorbar([r["x"] + offset for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                        marker="o", capsize=3,
                        label=f"frozen bank, trained on that share, on {group}" if experiment == "source-size" else group)  # fmt: skip
        for row in scratch.values():
            ax.axhline(row["mean"], color="black", linestyle="--", linewidth=1,
                       label=f"from scratch ({row['dataset']}): {row['mean']:.3f} ± {row['std']:.3f}")  # fmt: skip
            ax.axhspan(row["mean"] - row["std"], row["mean"] + row["std"], color="black", alpha=0.06)
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
    runs recorded no per-epoch history (results written before it was kept)."""
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
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    path = folder / f"{data['experiment']}.png"
    _plot(data["experiment"], data["model"], data["summary"], path, chance=results_chance(data))
    return path


def results_chance(data: Mapping[str, Any]) -> dict[str, float]:
    """Chance (1 / classes) of every dataset an experiment's ``results.json`` content trained on, its own class halves
    (layer-split) included.

    Example:
        >>> results_chance(json.loads(Path("docs/experiments/layer-split/results.json").read_text()))
        {'animal-mnist-B': 0.2, ...}
    """
    datasets = dict(BUILTIN_DATASETS)
    if data["experiment"] == "layer-split":
        datasets.update({half.name: half for half in split_classes(data["details"]["halves"][0].rsplit("-", 1)[0])})
    return _chance_levels(data["runs"], datasets)


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

    Raises:
        TrainingConfigError: an unknown experiment, scale or config key.

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
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    run = _Runner(name, config, folder, cpu_threads, resume, jobs)
    start = time.perf_counter()
    try:
        details = EXPERIMENTS[name](run)
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
    if plan is not None:
        results["plan"] = {**plan, "plan": asdict(plan["plan"]) if plan["plan"] else None}
        results["confirmatory"] = confirmatory
        results["confirmatory_table"] = confirmatory_table(confirmatory, plan["plan"]).splitlines()
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "command.txt").write_text(results["command"] + "\n")
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    _plot(name, config.model, summary, folder / f"{name}.png", chance=chance)
    plot_learning_curves(records, folder / f"{name}-curves.png", title=f"{name}: accuracy per epoch")
    return results
