"""The Master Key Filters paper's experiments, runnable on any timm DS-CNN and dataset masterkey can train on.

The research wing's experiments package: one module per experiment (``transfer_matrix``, ``tuning`` for
``regime`` and ``lr-sweep``, ``layer_split``, ``source_size``, ``across_architectures``, ``cross_family``), the grid
runner (``runner``), its configuration (``config``), ``statistics``, ``tables``, ``plots``, ``results`` (reading
a ``results.json`` back) and ``run`` that puts them together. Each experiment is a grid of training runs (cells x seeds) through
:func:`masterkey.training.train_transfer`, so the same code scales from the offline datasets on 2 CPU cores to GPUs with Accelerate; ``jobs`` trains several runs at a
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
    >>> from masterkey.research.experiments import run_experiment
    >>> results = run_experiment("source-size", scale="quick", out_dir="outputs/experiments")
    >>> results["summary"][0]["mean"]
"""

from .across_architectures import across_architectures, distinct_mappings
from .config import SCALES, TUNING_EXPERIMENTS, ExperimentConfig, Scale, variant_of
from .cross_family import cross_family
from .layer_split import layer_split, layer_steps, pointwise_filters, split_classes
from .plots import plot_learning_curves, replot, results_chance
from .results import RESULTS_KEYS, read_results
from .run import EXPERIMENTS, run_experiment
from .runner import first_layers, source_bank
from .source_size import source_size, source_size_arms
from .statistics import (
    CONVERGED_RISE,
    LEARNED_LOSS_SHARE,
    LEARNED_SIGMAS,
    learning_check,
    paired_contrasts,
    paired_difference,
    steps_to_reach,
    summarize,
    time_to_reach,
)
from .tables import (
    confirmatory_table,
    contrast_table,
    format_difference,
    markdown_table,
    reproduce_text,
    time_to_reach_table,
    tuning_table,
    wall_time_text,
)
from .transfer_matrix import main_arms, transfer_matrix, transfer_matrix_arms
from .tuning import best_learning_rates, chosen_budgets, edge_extensions, lr_sweep, regime

__all__ = [
    "Scale", "SCALES", "ExperimentConfig", "EXPERIMENTS", "TUNING_EXPERIMENTS", "run_experiment", "summarize",
    "learning_check", "paired_difference", "paired_contrasts", "format_difference", "contrast_table",
    "markdown_table", "confirmatory_table", "plot_learning_curves", "replot", "results_chance", "best_learning_rates",
    "chosen_budgets", "main_arms", "transfer_matrix_arms", "source_size_arms", "split_classes", "pointwise_filters",
    "distinct_mappings", "variant_of", "source_bank", "first_layers", "regime", "lr_sweep", "transfer_matrix",
    "layer_split", "source_size", "across_architectures", "cross_family", "CONVERGED_RISE", "LEARNED_LOSS_SHARE",
    "LEARNED_SIGMAS", "steps_to_reach", "time_to_reach", "time_to_reach_table", "layer_steps",
    "edge_extensions", "wall_time_text", "reproduce_text", "tuning_table", "read_results", "RESULTS_KEYS",
]  # fmt: skip
