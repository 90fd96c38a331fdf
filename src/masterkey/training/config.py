"""The configuration of a transfer run, in three groups of arguments, and the command line of
``examples/transfer.py`` generated from them.

The arguments come in groups, as in transformers' example scripts (``ModelArguments``, ``DataTrainingArguments``,
``TrainingArguments`` turned into one parser by ``HfArgumentParser``):

- :class:`ModelArguments`: the model, the filter bank injected and frozen in it, and what else trains;
- :class:`DataArguments`: the dataset, its splits, sample limits, resolution, augmentation and loading;
- :class:`TrainingArguments`: optimisation and schedule, seed, speed switches, the output folder, checkpoints,
  tracking and the Hub upload.

:class:`TrainingConfig` is the flat configuration of one run, composed of the three: a dataclass that inherits the
groups' fields, so it holds every field under its own name (``config.learning_rate``), in the groups' order
(model, data, training: the order the command line and ``results.json`` always had), and is an instance of each
group. That keeps everything written before the groups working unchanged: ``TrainingConfig(**fields)``,
:func:`make_config` (flat keyword arguments, as ``train_transfer(**options)`` takes them), :func:`parse_args`,
``dataclasses.fields(TrainingConfig)``, and the flat JSON of :meth:`TrainingConfig.to_dict` that ``results.json``
holds and :func:`run_identity` compares with the ``run_config.json`` of earlier runs (same keys, same order).
:meth:`TrainingConfig.to_groups` and :meth:`TrainingConfig.from_groups` go between the flat configuration and the
groups; :func:`parse_args_into_groups` parses a command line into the three, as ``parse_args_into_dataclasses`` does.
Checks that span groups (``--compare_with_scratch`` needs a bank, ``--resume_from_checkpoint latest`` needs
``--output_dir``, ...) live in :meth:`TrainingConfig.validate`, so a run is always checked as a whole.

Names and meanings follow transformers' ``run_image_classification_no_trainer.py`` wherever the meaning is the same
(``--dataset_name``, ``--train_dir``, ``--per_device_train_batch_size``, ``--checkpointing_steps``, ...; ``--model``
also answers to that script's ``--model_name_or_path``); defaults suit training a small DS-CNN on CPU. Mixed precision
and multi-GPU / multi-node come from Accelerate's own config and launcher (``accelerate config``,
``accelerate launch``).

Every field carries its help text in ``metadata``, any other command-line names it answers to (``aliases``), and the
flags that other code reads from the fields instead of keeping its own list of names: ``identity`` (the field defines
the run: a checkpoint or a finished run folder is reused only when all of them agree, :func:`run_identity`), ``card``
(a row of the model card's training table) and ``positive`` (a positive integer or unset). :func:`build_parser` turns
the groups into one ``argparse`` parser with an argument group each (``model``, ``data``, ``training``), so
``--help`` lists the options by group.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..constants import MAPPING_NAMES
from ..errors import MasterKeyError, TrainingConfigError
from ..inject import TRAINABLE_POLICIES, check_trainable

__all__ = [
    "TrainingConfig",
    "ModelArguments",
    "DataArguments",
    "TrainingArguments",
    "ARGUMENT_GROUPS",
    "build_parser",
    "parse_args",
    "parse_args_into_groups",
    "make_config",
    "validate_config",
    "run_identity",
    "DEMO_ARGS",
    "RUN_IDENTITY_KEYS",
    "CARD_KEYS",
    "DEFAULT_DATASET",
    "SCHEDULERS",
    "is_scratch",
]

DEFAULT_DATASET = "animal-mnist"

#: The embedded default: what ``examples/transfer.py`` runs when given no arguments (fully offline, about
#: 10 minutes on 2 CPU cores): the ImageNet lite0 bank frozen in a fresh tf_efficientnet_lite0 against the same
#: model trained from scratch, on animal-mnist at 32 px. Every other setting is the default recipe (AdamW lr 2e-3,
#: cosine schedule, 50 warm-up steps, 4 epochs, batch 64, crop scale 0.5-1): any run gets it.
DEMO_ARGS = (
    "--model", "tf_efficientnet_lite0",
    "--filters", "imagenet-lite0",
    "--dataset_name", "animal-mnist",
    "--resolution", "32",
    "--compare_with_scratch",
)  # fmt: skip

#: Learning-rate schedules (transformers' ``get_scheduler`` names that need no extra argument).
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
)  # fmt: skip


def option(default: Any, help: str, *, identity: bool = False, card: bool = False, positive: bool = False,
           aliases: Sequence[str] = (), group: str | None = None, **argparse_kwargs: Any) -> Any:  # fmt: skip
    """A field of an argument group: its default, help text, the other command-line names it answers to
    (``aliases``, e.g. a flag's name before a rename), the flags other code derives its lists from (``identity``,
    ``card``, ``positive``), and extra ``argparse`` keywords (``choices``, ``nargs``, ``metavar``), kept in
    ``metadata``. ``group`` is deprecated and ignored: a field's command-line group is the dataclass it is declared
    in (:data:`ARGUMENT_GROUPS`).

    Example:
        >>> seed: int = option(42, "random seed", identity=True, card=True)
    """
    if group is not None:
        warnings.warn("option(group=...) is deprecated and ignored: a field's command-line group is the argument "
                      "dataclass it is declared in.", DeprecationWarning, stacklevel=2)  # fmt: skip
    metadata = {"help": help, "aliases": tuple(aliases), "identity": identity, "card": card, "positive": positive,
                "argparse": argparse_kwargs}  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class ModelArguments:
    """The ``model`` group: the model, the filter bank injected (and frozen) in it, and what else trains.

    Example:
        >>> ModelArguments(model="convnext_atto", mapping="depth").filters
        'imagenet-lite0'
    """

    model: str = option(
        "tf_efficientnet_lite0",
        "timm model name: an architecture (created with random weights unless --pretrained), a name with a pretrained "
        "tag (convnext_tiny.fb_in1k) or a Hub id (hf-hub:org/model), which start from those weights",
        identity=True, card=True, aliases=("--model_name_or_path",),
    )  # fmt: skip
    pretrained: bool = option(
        False,
        "start from the model's pretrained weights (timm's default tag; through the Hugging Face cache, offline once "
        "cached): with --filters own its own depthwise kernels are frozen and the rest fine-tuned",
        identity=True, card=True,
    )  # fmt: skip
    filters: str = option(
        "imagenet-lite0",
        "filter bank to inject and freeze: a Hub repo id, a local folder, a named bank (imagenet-lite0), 'own' (the "
        "model's own depthwise kernels, pretrained with --pretrained), or 'none' to train every weight",
        identity=True, card=True,
    )  # fmt: skip
    trainable: str = option("all-but-depthwise", "what else trains", identity=True, card=True,
                            choices=TRAINABLE_POLICIES)  # fmt: skip
    no_freeze: bool = option(False, "inject the filters but keep them trainable", identity=True)
    no_strict: bool = option(False, "inject only the convs the bank fits; leave the rest", identity=True)
    mapping: str = option(
        "exact",
        "how the model's depthwise convs find their bank entry: 'exact' (same module path and shape), 'depth' (any "
        "architecture, by structure: the same kernel size first, then the nearest feature-map scale, then the nearest "
        "position at that scale), 'stage' (the earlier rule: nearest relative depth by module-path stages) or 'size' "
        "(the same kernel size first, then stage)",
        identity=True, card=True, choices=MAPPING_NAMES,
    )  # fmt: skip
    model_kwargs: dict[str, Any] | None = option(
        None,
        "more keyword arguments of timm.create_model as a JSON object, e.g. '{\"ls_init_value\": 1.0}' (ConvNeXt's "
        "layer scale) or '{\"drop_path_rate\": 0.1}'; saved with the model as timm's model_args",
        identity=True, card=True, type=lambda text: _json_object("--model_kwargs", text), metavar="JSON",
    )  # fmt: skip
    compare_with_scratch: bool = option(
        False, "also train the same model from scratch (--filters none) and print both accuracies side by side",
    )  # fmt: skip


@dataclass
class DataArguments:
    """The ``data`` group: the dataset, its columns and splits, sample limits, resolution, augmentation, loading.

    Example:
        >>> DataArguments(dataset_name="digits", resolution=32).crop_scale
        (0.5, 1.0)
    """

    dataset_name: str | None = option(
        None,
        "Hub dataset id, a saved DatasetDict or image folder, or a built-in offline dataset (animal-mnist, digits); "
        f"default {DEFAULT_DATASET} unless --train_dir is given",
        identity=True, card=True,
    )  # fmt: skip
    dataset_config_name: str | None = option(None, "configuration of the Hub dataset", identity=True)
    train_dir: str | None = option(None, "folder of training images (imagefolder: one folder per class)",
                                   identity=True, card=True)  # fmt: skip
    validation_dir: str | None = option(None, "folder of validation images (imagefolder)", identity=True)
    image_column_name: str | None = option(None, "image column (default: the Image feature)", identity=True)
    label_column_name: str | None = option(None, "label column (default: the ClassLabel feature)", identity=True)
    train_val_split: float = option(0.15, "fraction of train held out when there is no eval split", identity=True)
    validation_from_train: bool = option(
        False,
        "evaluate on --train_val_split of the training split, held out (drawn with --seed), even where the dataset has "
        "a test split: for choosing hyperparameters without ever looking at the test split",
        identity=True,
    )  # fmt: skip
    max_train_samples: int | None = option(None, "use at most this many train images", identity=True, positive=True)
    max_eval_samples: int | None = option(None, "use at most this many eval images", identity=True, positive=True)
    resolution: int | None = option(None, "image size (default: the model's)", identity=True, card=True,
                                    positive=True)  # fmt: skip
    # a tuple as the default (a dataclass default must be immutable); validate() makes it a list, as JSON reads back
    crop_scale: Sequence[float] = option(
        (0.5, 1.0),
        "area range of timm's random-resized-crop training augmentation (timm's own 0.08 crops small images beyond "
        "recognition)",
        identity=True, card=True, nargs=2, metavar=("MIN", "MAX"),
    )  # fmt: skip
    dataloader_num_workers: int | None = option(
        None,
        "DataLoader worker processes per training process (default: 1 on CPU, which keeps decoding and augmentation "
        "off the training loop's path; up to 8 on a GPU, which one worker starves: benchmarks/gpu_train.py)",
    )  # fmt: skip


@dataclass
class TrainingArguments:
    """The ``training`` group: optimisation and schedule, the seed, speed switches, and what the run writes (the
    output folder, checkpoints, tracking, the Hub upload).

    Example:
        >>> TrainingArguments(learning_rate=1e-3).lr_scheduler_type
        'cosine'
    """

    # -- optimisation
    per_device_train_batch_size: int = option(64, "training batch size per process", identity=True, card=True,
                                              positive=True)  # fmt: skip
    per_device_eval_batch_size: int = option(128, "evaluation batch size per process", positive=True)
    learning_rate: float = option(2e-3, "AdamW learning rate", identity=True, card=True)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and norms)", identity=True, card=True)
    num_train_epochs: int = option(4, "passes over the training split", identity=True, card=True, positive=True)
    max_train_steps: int | None = option(None, "overrides --num_train_epochs", identity=True, card=True,
                                         positive=True)  # fmt: skip
    gradient_accumulation_steps: int = option(1, "batches accumulated into one optimizer step", identity=True,
                                              card=True, positive=True)  # fmt: skip
    lr_scheduler_type: str = option("cosine", "learning-rate schedule", identity=True, card=True,
                                    choices=SCHEDULERS)  # fmt: skip
    num_warmup_steps: int = option(50, "optimizer steps of learning-rate warm-up", identity=True, card=True)
    seed: int = option(42, "seed of the initial weights, the data order and the held-out split", identity=True,
                       card=True)  # fmt: skip

    # -- speed: none of these is part of the run's identity: each computes the same run within floating-point
    # tolerance (tests/test_training_speed.py)
    cpu_threads: int | None = option(
        None,
        "torch threads per process on CPU (default: the available cores divided among the local processes; "
        "Accelerate's launcher would otherwise leave one)",
        positive=True,
    )  # fmt: skip
    channels_last: bool = option(
        True,
        "the channels_last memory layout for the model and its inputs, in training and evaluation, where it is faster: "
        "on CPU always, on a GPU from 128 px (benchmarks/train_loop.py, benchmarks/gpu_train.py; the saved model is in "
        "the ordinary layout either way); --no_channels_last trains in the ordinary layout",
    )  # fmt: skip
    transposed_depthwise_backward: bool = option(
        True,
        "compute the input gradient of frozen depthwise convs with kernels of 7x7 and up (ConvNeXt's) as a transposed "
        "convolution rather than by torch's own backward: the same gradients to float rounding, about 1.2x faster "
        "ConvNeXt training on CPU (benchmarks/train_loop.py); on CPU and without --torch_compile only; "
        "--no_transposed_depthwise_backward uses torch's backward",
    )  # fmt: skip
    reuse_freed_memory: bool = option(
        True,
        "on CPU with glibc (Linux), keep the memory a training step frees in the process for the next step instead "
        "of returning it to the OS and faulting it in again page by page: steps about 1.1x faster at 32-64 px, 1.5x "
        "and 2.1x for tf_efficientnet_lite0 at 128 and 224 px (benchmarks/train_loop.py --default_allocator), the "
        "same numbers, up to a fifth more peak memory; the memory is returned when training ends; "
        "--no_reuse_freed_memory keeps malloc's defaults",
    )  # fmt: skip
    flush_denormal: bool = option(
        True,
        "on CPU, flush denormal floats (below about 1.2e-38) to zero in training and evaluation: x86 computes them "
        "many times slower, and some runs make many (a ConvNeXt-atto step 6x faster at a high learning rate, "
        "benchmarks/denormals.py); numbers that small change nothing a run learns, but its arithmetic is that of "
        "this mode; --no_flush_denormal keeps IEEE denormals",
    )  # fmt: skip
    torch_compile: bool = option(
        False,
        "torch.compile the model (inductor) before training; compiling takes minutes on CPU (compile_time_s in "
        "results.json) and pays only in runs longer than that",
    )  # fmt: skip

    # -- output
    output_dir: str | None = option(None, "default: outputs/transfer/<model>_<dataset>_<time>")
    overwrite_output_dir: bool = option(False, "replace another run's results in output_dir")
    checkpointing_steps: int | str | None = option(None, "save state every N steps, or 'epoch'")
    # not part of the run's identity: how many checkpoints to keep does not change what the run computes
    checkpoints_total_limit: int | None = option(
        None, "keep at most this many checkpoints, deleting the oldest (default: keep all)", positive=True
    )
    resume_from_checkpoint: str | None = option(None, "a checkpoint folder, or 'latest' in output_dir")
    with_tracking: bool = option(False, "log metrics with Accelerate's trackers")
    report_to: str = option("tensorboard", "tracker(s) for --with_tracking ('all' for every one)")
    push_to_hub: bool = option(False, "upload the output folder to the Hub at the end")
    hub_model_id: str | None = option(None, "repo id for --push_to_hub (default: the output folder name)")
    hub_token: str | None = option(None, "token for --push_to_hub (default: the logged-in one)")
    log_sample_ids: bool = option(False, "write sample_ids.jsonl: the examples of every step and eval")
    disable_tqdm: bool = option(False, "no progress bar (the experiments' worker processes, which share one log)")


#: The argument groups, by command-line group title, in the order of the command line and of the flat configuration.
ARGUMENT_GROUPS: dict[str, type] = {"model": ModelArguments, "data": DataArguments, "training": TrainingArguments}


# The bases are listed last group first: a dataclass collects its bases' fields from the end of the MRO, so the fields
# come in the groups' order, model first (the order of the command line and of results.json).
@dataclass
class TrainingConfig(TrainingArguments, DataArguments, ModelArguments):
    """Everything one transfer run needs, flat: the fields of :class:`ModelArguments`, :class:`DataArguments` and
    :class:`TrainingArguments` in that order; the command-line option ``--<name>`` of each field sets it.

    The fields are plain JSON values, so a configuration is written to ``results.json`` and compared with the
    ``run_config.json`` of earlier runs as is. Build one with :func:`make_config` (keyword arguments, checked),
    :func:`parse_args` (a command line) or :meth:`from_groups` (the three groups); :meth:`validate` checks one built by
    hand; :meth:`to_groups` splits one into its groups.

    Example:
        >>> config = TrainingConfig(model="mobilenetv3_small_050", dataset_name="digits", resolution=32).validate()
        >>> run_identity(config)["model"]
        'mobilenetv3_small_050'
    """

    def validate(self) -> TrainingConfig:
        """Check the configuration for contradictions and fill in derived defaults, in place; returns ``self``.

        Raises:
            TrainingConfigError: the first contradiction found, naming the option.

        Example:
            >>> TrainingConfig(train_val_split=1.5).validate()
            Traceback (most recent call last):
            masterkey.errors.TrainingConfigError: --train_val_split must be between 0 and 1, got 1.5.
        """

        def fail(message: str) -> None:
            raise TrainingConfigError(message)

        # NaN compares false with everything and inf passes a lower bound: a non-finite value would slip through the
        # range checks below and train to NaN
        for name, value in _float_values(self):
            if not math.isfinite(value):
                fail(f"--{name} must be a finite number, got {value!r}.")
        if self.model_kwargs is not None:
            self.model_kwargs = _model_kwargs(self.model_kwargs)
        if self.dataset_name is None and self.train_dir is None:
            self.dataset_name = DEFAULT_DATASET
        if self.dataset_name is not None and self.train_dir is not None:
            fail("Pass either --dataset_name or --train_dir (with --validation_dir), not both.")
        if self.validation_dir is not None and self.train_dir is None:
            fail("--validation_dir needs --train_dir.")
        if not 0.0 < self.train_val_split < 1.0:
            fail(f"--train_val_split must be between 0 and 1, got {self.train_val_split}.")
        if not self.learning_rate > 0:
            fail(f"--learning_rate must be positive, got {self.learning_rate}.")
        if self.weight_decay < 0 or self.num_warmup_steps < 0 or (self.dataloader_num_workers or 0) < 0:
            fail("--weight_decay, --num_warmup_steps and --dataloader_num_workers cannot be negative.")
        for name in POSITIVE_KEYS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                fail(f"--{name} must be a positive integer, got {value!r}.")
        low, high = self.crop_scale
        if not 0.0 < low <= high <= 1.0:
            fail(f"--crop_scale needs 0 < MIN <= MAX <= 1, got {low} {high}.")
        self.crop_scale = [float(low), float(high)]  # a list, as it reads back from JSON
        if self.lr_scheduler_type not in SCHEDULERS:
            fail(f"--lr_scheduler_type {self.lr_scheduler_type!r} is not one of {', '.join(SCHEDULERS)}.")
        try:
            check_trainable(self.trainable)  # the one policy check, shared with every injector
        except MasterKeyError as e:
            raise TrainingConfigError(str(e)) from None
        steps = self.checkpointing_steps
        if steps is not None and str(steps) != "epoch":
            try:
                self.checkpointing_steps = int(steps)
            except ValueError:
                fail(f"--checkpointing_steps must be a positive integer or 'epoch', got {steps!r}.")
            if self.checkpointing_steps <= 0:
                fail(f"--checkpointing_steps must be a positive integer or 'epoch', got {steps!r}.")
        if self.compare_with_scratch:
            if is_scratch(self.filters):
                fail("--compare_with_scratch compares a filter bank with training from scratch; --filters is 'none'.")
            if self.resume_from_checkpoint not in (None, "latest"):
                fail("With --compare_with_scratch, --resume_from_checkpoint can only be 'latest' (each run resumes "
                     "its own).")  # fmt: skip
        if self.resume_from_checkpoint == "latest" and self.output_dir is None:
            fail("--resume_from_checkpoint latest looks in --output_dir: pass the output folder of the run to resume.")
        if self.push_to_hub and _hub_offline():
            fail("--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set; unset it or drop --push_to_hub.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields in declaration order (the command line's order), as written to ``results.json``.

        Example:
            >>> list(make_config(dataset_name="digits").to_dict())[:3]
            ['model', 'pretrained', 'filters']
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_groups(self) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
        """The configuration split into its argument groups, in :data:`ARGUMENT_GROUPS` order (copies: changing one
        leaves the configuration as it was).

        Example:
            >>> model_args, data_args, training_args = make_config(dataset_name="digits").to_groups()
            >>> data_args.dataset_name, training_args.learning_rate
            ('digits', 0.002)
        """
        return tuple(
            group(**{f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(group)})
            for group in ARGUMENT_GROUPS.values()
        )  # type: ignore[return-value]

    @classmethod
    def from_groups(cls, *groups: ModelArguments | DataArguments | TrainingArguments) -> TrainingConfig:
        """The flat configuration of one instance of each argument group (any order), validated.

        Raises:
            TrainingConfigError: a group missing or given twice, or an object that is not one (a
                :class:`TrainingConfig` is split with :meth:`to_groups` first); any contradiction
                :meth:`validate` finds.

        Example:
            >>> config = TrainingConfig.from_groups(ModelArguments(model="convnext_atto"),
            ...                                     DataArguments(dataset_name="digits"), TrainingArguments(seed=1))
            >>> config.model, config.dataset_name, config.seed
            ('convnext_atto', 'digits', 1)
        """
        by_type = {type(group): group for group in groups}
        expected = tuple(ARGUMENT_GROUPS.values())
        if len(groups) != len(expected) or set(by_type) != set(expected):
            given = ", ".join(type(group).__name__ for group in groups) or "nothing"
            raise TrainingConfigError(f"TrainingConfig.from_groups takes one each of "
                                      f"{', '.join(g.__name__ for g in expected)}; got {given}.")  # fmt: skip
        values = {f.name: copy.deepcopy(getattr(by_type[g], f.name)) for g in expected for f in fields(g)}
        return cls(**values).validate()


def _float_values(config: TrainingConfig) -> list[tuple[str, float]]:
    """``(name, value)`` of every float the configuration holds: a float field, or an item of a sequence field such as
    ``crop_scale``; found by type, so that a float option added later is checked too."""
    found = []
    for f in fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, float):  # ints (and bools) are always finite
                found.append((f.name, item))
    return found


#: create_model arguments a run sets itself, from the dataset and from --pretrained
_RUN_MODEL_ARGS = ("num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def _json_object(option_name: str, text: str) -> dict[str, Any]:
    """A command-line JSON object (``--model_kwargs``), or an error that says what was wrong."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{option_name} must be a JSON object such as '{{\"a\": 1}}': {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{option_name} must be a JSON object, got {text!r}.")
    return value


def _model_kwargs(value: Any) -> dict[str, Any]:
    """``--model_kwargs`` checked: an object of JSON values keyed by argument name, none of which the run sets."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.isidentifier() for k in value):
        raise TrainingConfigError(f"--model_kwargs must map argument names to values, got {value!r}.")
    taken = sorted(set(value) & set(_RUN_MODEL_ARGS))
    if taken:
        raise TrainingConfigError(f"--model_kwargs cannot set {', '.join(taken)}: the run sets them (from the "
                                  "dataset's classes and --pretrained).")  # fmt: skip
    try:
        return json.loads(json.dumps(value, allow_nan=False))  # plain JSON values, as results.json reads them back
    except (TypeError, ValueError):
        raise TrainingConfigError(f"--model_kwargs values must be JSON values (numbers, strings, lists), got "
                                  f"{value!r}.") from None  # fmt: skip


def _keys(flag: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(TrainingConfig) if f.metadata[flag])


#: Fields that define a run: a checkpoint resumes, and a finished folder is reused, only when all of them agree.
RUN_IDENTITY_KEYS = _keys("identity")
#: Identity keys added after run folders were first written, with the value every run without them had: a folder or
#: checkpoint that lacks one is the same run as one that holds this value.
IDENTITY_ADDED_SINCE = {"pretrained": False, "validation_from_train": False, "model_kwargs": None}
#: Fields listed in the model card's training configuration table.
CARD_KEYS = _keys("card")
#: Fields that must be positive integers when set.
POSITIVE_KEYS = _keys("positive")


def validate_config(config: TrainingConfig) -> TrainingConfig:
    """:meth:`TrainingConfig.validate`: check ``config`` in place, raising :class:`TrainingConfigError`.

    Example:
        >>> validate_config(TrainingConfig(dataset_name="digits")).crop_scale
        [0.5, 1.0]
    """
    return config.validate()


def is_scratch(spec: str | None) -> bool:
    """``--filters none`` (or ``scratch``, or empty): no bank, the from-scratch baseline.

    Example:
        >>> is_scratch("none"), is_scratch("imagenet-lite0")
        (True, False)
    """
    return spec is None or spec.strip().lower() in ("none", "scratch", "")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def run_identity(config: TrainingConfig) -> dict[str, Any]:
    """The fields that define the run (:data:`RUN_IDENTITY_KEYS`, in that order), for checkpoints and output folders.

    Example:
        >>> list(run_identity(make_config(dataset_name="digits")))[:3]
        ['model', 'pretrained', 'filters']
    """
    return {key: getattr(config, key) for key in RUN_IDENTITY_KEYS}


# -- the command line, generated from the fields ---------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _value_types(annotation: Any) -> list[Any]:
    """The types a field's annotation allows, ``None`` left out: ``int | None`` -> ``[int]``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [t for t in typing.get_args(annotation) if t is not type(None)]
    return [annotation]


def _argparse_kwargs(f: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    """How ``argparse`` reads one field: a ``bool`` is a switch (``--<name>`` sets a field that defaults to false,
    ``--no_<name>`` clears one that defaults to true, :func:`_option_strings`); a field of one scalar type converts
    with that type (a positive integer with a check); anything else (``int | str``) stays the string given, for
    :meth:`validate`."""
    kwargs: dict[str, Any] = {"default": f.default}
    value_types = _value_types(annotation)
    if value_types == [bool]:
        action = "store_false" if f.default is True else "store_true"
        return {**kwargs, "dest": f.name, "action": action, "help": f.metadata["help"]}
    extra = dict(f.metadata["argparse"])
    if f.metadata["positive"]:
        kwargs["type"] = _positive_int
    elif "nargs" in extra:  # a sequence: its items' type
        (item,) = {t for t in typing.get_args(value_types[0])} or {str}
        kwargs["type"] = item
    elif len(value_types) == 1 and value_types[0] in (int, float):
        kwargs["type"] = value_types[0]
    return {**kwargs, **extra, "help": f.metadata["help"]}


def _option_strings(f: dataclasses.Field) -> list[str]:
    """``--<name>``, or ``--no_<name>`` for a switch that is on by default (as ``--no_freeze``, ``--no_strict``),
    then the field's ``aliases``."""
    return [f"--no_{f.name}" if f.default is True else f"--{f.name}", *f.metadata["aliases"]]


#: The description under each group's title in ``--help``.
_GROUP_DESCRIPTIONS = {
    "model": "the model, the filter bank injected and frozen in it, and what else trains (ModelArguments)",
    "data": "the dataset, its splits and columns, sample limits, resolution and loading (DataArguments)",
    "training": "optimisation, schedule, seed and speed; the output folder, checkpoints, tracking and the Hub "
    "(TrainingArguments)",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``examples/transfer.py``: one parser generated from the argument groups
    (:data:`ARGUMENT_GROUPS`), an ``argparse`` argument group each, with one ``--<name>`` option per field (and its
    aliases), its default and help text.

    Example:
        >>> build_parser().parse_args(["--model", "convnext_atto"]).model
        'convnext_atto'
    """
    parser = argparse.ArgumentParser(
        prog="transfer.py",
        description="Inject a master-key filter bank into a timm DS-CNN, freeze it, and fine-tune the rest on an "
        "image-classification dataset with Accelerate. Without arguments: the offline demo "
        f"({' '.join(DEMO_ARGS)}).",
    )
    for title, group in ARGUMENT_GROUPS.items():
        arguments = parser.add_argument_group(title, _GROUP_DESCRIPTIONS[title])
        hints = typing.get_type_hints(group)
        for f in fields(group):
            arguments.add_argument(*_option_strings(f), **_argparse_kwargs(f, hints[f.name]))
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainingConfig:
    """Parse and validate a command line; an empty ``argv`` (``[]``) means the embedded demo (:data:`DEMO_ARGS`),
    ``None`` means ``sys.argv[1:]``.

    Example:
        >>> parse_args(["--dataset_name", "digits", "--checkpointing_steps", "5"]).checkpointing_steps
        5
    """
    if argv is not None and len(argv) == 0:
        argv = list(DEMO_ARGS)
    return TrainingConfig(**vars(build_parser().parse_args(argv))).validate()


def parse_args_into_groups(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """:func:`parse_args`, its result split into the argument groups (:meth:`TrainingConfig.to_groups`): checked as
    a whole run first, so the groups hold the derived defaults too.

    Example:
        >>> model_args, data_args, training_args = parse_args_into_groups(["--dataset_name", "digits", "--seed", "3"])
        >>> model_args.model, data_args.dataset_name, training_args.seed
        ('tf_efficientnet_lite0', 'digits', 3)
    """
    return parse_args(argv).to_groups()


def make_config(**kwargs: Any) -> TrainingConfig:
    """The configuration of one run from keyword arguments (the defaults for the rest), validated.

    Example:
        >>> cfg = make_config(model="mobilenetv3_small_050", dataset_name="digits", resolution=32)
    """
    unknown = sorted(set(kwargs) - {f.name for f in fields(TrainingConfig)})
    if unknown:
        raise TrainingConfigError(f"Unknown training options {unknown}; see build_parser() for the names.")
    return TrainingConfig(**kwargs).validate()
