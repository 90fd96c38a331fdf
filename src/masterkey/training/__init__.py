"""Transfer training with Accelerate: inject a master-key filter bank into a timm DS-CNN, freeze it, fine-tune the
rest on any ``datasets`` image-classification dataset, and report the result.

``examples/transfer.py`` is the command line (it parses with :func:`parse_args` and prints what the run logs); the
work is done here, in modules layered bottom to top (each imports only the ones above it in this list):

- :mod:`.config`: :class:`TrainingConfig` (one typed field per option, composed of :class:`ModelArguments`,
  :class:`DataArguments` and :class:`TrainingArguments`), the command line generated from it
  (:func:`build_parser`, :func:`parse_args`), :func:`make_config`, :func:`run_identity`, the embedded default
  (:data:`DEMO_ARGS`);
- :mod:`.data`: built-in offline datasets (:data:`BUILTIN_DATASETS`), :func:`load_image_dataset`, column
  detection, label mapping, timm transforms;
- :mod:`.filters`: what ``--filters`` names (:func:`resolve_filters`, :data:`NAMED_FILTERS`);
- :mod:`.results`: :class:`RunResults`, the typed record behind a run's ``results.json``, which everything that
  reads runs reads them through;
- :mod:`.outputs`: results.json, the model folder (timm and transformers), the model card, checkpoint and folder
  checks;
- :mod:`.loop`: :func:`training_loop`, :func:`evaluate_model` and the accuracy metric shipped with masterkey
  (:func:`load_accuracy_metric`);
- :mod:`.run`: :func:`train_transfer`, which wires a configuration into the loop and records the run.

Messages go to the ``masterkey.training`` loggers (``logging``); progress bars are tqdm's.

Requires the ``train`` extra: ``pip install 'masterkey[train]'``.
"""

from __future__ import annotations

from .config import (
    DEMO_ARGS,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    TrainingConfig,
    build_parser,
    make_config,
    parse_args,
    parse_args_into_groups,
    run_identity,
)
from .data import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    load_builtin_dataset,
    load_image_dataset,
    prepare_splits,
    register_dataset,
)
from .filters import NAMED_FILTERS, ResolvedFilters, resolve_filters
from .loop import (
    ACCURACY_METRIC_PATH,
    LoopState,
    evaluate_model,
    load_accuracy_metric,
    training_loop,
)
from .results import FinalMetrics, ParameterCounts, RunResults
from .run import injection_plan, slugify, train_transfer

__all__ = [
    "train_transfer",
    "injection_plan",
    "TrainingConfig",
    "ModelArguments",
    "DataArguments",
    "TrainingArguments",
    "parse_args_into_groups",
    "RunResults",
    "FinalMetrics",
    "ParameterCounts",
    "parse_args",
    "build_parser",
    "make_config",
    "run_identity",
    "DEMO_ARGS",
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "register_dataset",
    "load_builtin_dataset",
    "load_image_dataset",
    "prepare_splits",
    "NAMED_FILTERS",
    "ResolvedFilters",
    "resolve_filters",
    "ACCURACY_METRIC_PATH",
    "load_accuracy_metric",
    "training_loop",
    "LoopState",
    "evaluate_model",
    "slugify",
]
