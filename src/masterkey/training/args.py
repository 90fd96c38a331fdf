"""Command-line arguments of ``examples/transfer.py``.

Names and meanings follow transformers' ``run_image_classification_no_trainer.py`` wherever the meaning is the same
(``--dataset_name``, ``--train_dir``, ``--per_device_train_batch_size``, ``--checkpointing_steps``, ...); defaults
suit training a small DS-CNN on CPU. Mixed precision and multi-GPU / multi-node come from Accelerate's own config and
launcher (``accelerate config``, ``accelerate launch``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ..errors import TrainingConfigError
from ..inject import TRAINABLE_POLICIES

__all__ = [
    "build_parser",
    "parse_args",
    "make_config",
    "validate_config",
    "DEMO_ARGS",
    "RUN_IDENTITY_KEYS",
    "DEFAULT_DATASET",
    "SCHEDULERS",
]

DEFAULT_DATASET = "animal-mnist"

#: The embedded default: what ``examples/transfer.py`` runs when given no arguments (fully offline, about
#: 10 minutes on 2 CPU cores): the ImageNet lite0 bank frozen in a fresh tf_efficientnet_lite0 against the same
#: model trained from scratch, on animal-mnist at 32 px.
DEMO_ARGS = (
    "--model", "tf_efficientnet_lite0",
    "--filters", "imagenet-lite0",
    "--dataset_name", "animal-mnist",
    "--resolution", "32",
    "--num_train_epochs", "4",
    "--per_device_train_batch_size", "64",
    "--learning_rate", "2e-3",
    "--lr_scheduler_type", "cosine",
    "--num_warmup_steps", "50",
    "--crop_scale", "0.5", "1.0",
    "--compare_with_scratch",
)  # fmt: skip

#: Learning-rate schedules (transformers' ``get_scheduler`` names that need no extra argument).
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
)  # fmt: skip

#: Arguments that define a run: a checkpoint resumes only a run that agrees on all of them.
RUN_IDENTITY_KEYS = (
    "model",
    "filters",
    "trainable",
    "no_freeze",
    "no_strict",
    "mapping",
    "dataset_name",
    "dataset_config_name",
    "train_dir",
    "validation_dir",
    "image_column_name",
    "label_column_name",
    "train_val_split",
    "max_train_samples",
    "max_eval_samples",
    "resolution",
    "crop_scale",
    "per_device_train_batch_size",
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "max_train_steps",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "num_warmup_steps",
    "seed",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer.py",
        description="Inject a master-key filter bank into a timm DS-CNN, freeze it, and fine-tune the rest on an "
        "image-classification dataset with Accelerate. Without arguments: the offline demo "
        f"({' '.join(DEMO_ARGS)}).",
    )
    g = parser.add_argument_group("model and filters")
    g.add_argument("--model", default="tf_efficientnet_lite0", help="timm model name (created without weights)")
    g.add_argument(
        "--filters",
        default="imagenet-lite0",
        help="filter bank to inject and freeze: a Hub repo id, a local folder, a named bank (imagenet-lite0), "
        "or 'none' to train from scratch",
    )
    g.add_argument("--trainable", default="all-but-depthwise", choices=TRAINABLE_POLICIES, help="what else trains")
    g.add_argument("--no_freeze", action="store_true", help="inject the filters but keep them trainable")
    g.add_argument("--no_strict", action="store_true", help="inject only the convs the bank fits; leave the rest")
    g.add_argument(
        "--mapping",
        default="exact",
        choices=("exact", "depth"),
        help="how the model's depthwise convs find their bank entry: 'exact' (same module path and shape) or "
        "'depth' (any architecture: nearest relative depth, kernels fitted)",
    )
    g.add_argument(
        "--compare_with_scratch",
        action="store_true",
        help="also train the same model from scratch (--filters none) and print both accuracies side by side",
    )

    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset_name",
        default=None,
        help=f"Hub dataset id, a saved DatasetDict or image folder, or a built-in offline dataset "
        f"(animal-mnist, digits); default {DEFAULT_DATASET} unless --train_dir is given",
    )
    g.add_argument("--dataset_config_name", default=None, help="configuration of the Hub dataset")
    g.add_argument("--train_dir", default=None, help="folder of training images (imagefolder: one folder per class)")
    g.add_argument("--validation_dir", default=None, help="folder of validation images (imagefolder)")
    g.add_argument("--image_column_name", default=None, help="image column (default: the Image feature)")
    g.add_argument("--label_column_name", default=None, help="label column (default: the ClassLabel feature)")
    g.add_argument(
        "--train_val_split", type=float, default=0.15, help="fraction of train held out when there is no eval split"
    )
    g.add_argument("--max_train_samples", type=_positive_int, default=None, help="use at most this many train images")
    g.add_argument("--max_eval_samples", type=_positive_int, default=None, help="use at most this many eval images")
    g.add_argument("--resolution", type=_positive_int, default=None, help="image size (default: the model's)")
    g.add_argument(
        "--crop_scale",
        type=float,
        nargs=2,
        default=(0.08, 1.0),
        metavar=("MIN", "MAX"),
        help="area range of timm's random-resized-crop training augmentation (default: timm's 0.08 1.0)",
    )
    g.add_argument(
        "--dataloader_num_workers",
        type=int,
        default=1,
        help="DataLoader worker processes per training process (1 keeps decoding and augmentation off the training "
        "loop's path: benchmarks/train_loop.py)",
    )

    g = parser.add_argument_group("optimisation")
    g.add_argument("--per_device_train_batch_size", type=_positive_int, default=64)
    g.add_argument("--per_device_eval_batch_size", type=_positive_int, default=128)
    g.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (not on biases and norms)")
    g.add_argument("--num_train_epochs", type=_positive_int, default=3)
    g.add_argument("--max_train_steps", type=_positive_int, default=None, help="overrides --num_train_epochs")
    g.add_argument("--gradient_accumulation_steps", type=_positive_int, default=1)
    g.add_argument("--lr_scheduler_type", default="linear", choices=SCHEDULERS)
    g.add_argument("--num_warmup_steps", type=int, default=0)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument(
        "--cpu_threads",
        type=_positive_int,
        default=None,
        help="torch threads per process on CPU (default: the available cores divided among the local processes; "
        "Accelerate's launcher would otherwise leave one)",
    )

    g = parser.add_argument_group("output")
    g.add_argument("--output_dir", default=None, help="default: outputs/transfer/<model>_<dataset>_<time>")
    g.add_argument("--overwrite_output_dir", action="store_true", help="replace another run's results in output_dir")
    g.add_argument("--checkpointing_steps", default=None, help="save state every N steps, or 'epoch'")
    g.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest' in output_dir")
    g.add_argument("--with_tracking", action="store_true", help="log metrics with Accelerate's trackers")
    g.add_argument("--report_to", default="tensorboard", help="tracker(s) for --with_tracking ('all' for every one)")
    g.add_argument("--push_to_hub", action="store_true", help="upload the output folder to the Hub at the end")
    g.add_argument("--hub_model_id", default=None, help="repo id for --push_to_hub (default: the output folder name)")
    g.add_argument("--hub_token", default=None, help="token for --push_to_hub (default: the logged-in one)")
    g.add_argument(
        "--log_sample_ids", action="store_true", help="write sample_ids.jsonl: the examples of every step and eval"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate; an empty ``argv`` (``[]``) means the embedded demo (:data:`DEMO_ARGS`)."""
    if argv is not None and len(argv) == 0:
        argv = list(DEMO_ARGS)
    return validate_config(build_parser().parse_args(argv))


def make_config(**kwargs: Any) -> argparse.Namespace:
    """The configuration of one run from keyword arguments (the parser's defaults for the rest).

    Example:
        >>> cfg = make_config(model="mobilenetv3_small_050", dataset_name="digits", resolution=32)
    """
    config = build_parser().parse_args([])
    unknown = sorted(set(kwargs) - set(vars(config)))
    if unknown:
        raise TrainingConfigError(f"Unknown training options {unknown}; see build_parser() for the names.")
    for key, value in kwargs.items():
        setattr(config, key, value)
    return validate_config(config)


def validate_config(config: argparse.Namespace) -> argparse.Namespace:
    """Check a configuration for contradictions, raising :class:`TrainingConfigError`; fills in derived defaults."""

    def fail(message: str) -> None:
        raise TrainingConfigError(message)

    if config.dataset_name is None and config.train_dir is None:
        config.dataset_name = DEFAULT_DATASET
    if config.dataset_name is not None and config.train_dir is not None:
        fail("Pass either --dataset_name or --train_dir (with --validation_dir), not both.")
    if config.validation_dir is not None and config.train_dir is None:
        fail("--validation_dir needs --train_dir.")
    if not 0.0 < config.train_val_split < 1.0:
        fail(f"--train_val_split must be between 0 and 1, got {config.train_val_split}.")
    for name in ("learning_rate",):
        if not getattr(config, name) > 0:
            fail(f"--{name} must be positive, got {getattr(config, name)}.")
    if config.weight_decay < 0 or config.num_warmup_steps < 0 or config.dataloader_num_workers < 0:
        fail("--weight_decay, --num_warmup_steps and --dataloader_num_workers cannot be negative.")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs",
                 "gradient_accumulation_steps", "max_train_steps", "max_train_samples", "max_eval_samples",
                 "resolution", "cpu_threads"):  # fmt: skip
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value <= 0):
            fail(f"--{name} must be a positive integer, got {value!r}.")
    low, high = config.crop_scale
    if not 0.0 < low <= high <= 1.0:
        fail(f"--crop_scale needs 0 < MIN <= MAX <= 1, got {low} {high}.")
    config.crop_scale = [float(low), float(high)]  # a list, as it reads back from JSON
    if config.lr_scheduler_type not in SCHEDULERS:
        fail(f"--lr_scheduler_type {config.lr_scheduler_type!r} is not one of {', '.join(SCHEDULERS)}.")
    if config.trainable not in TRAINABLE_POLICIES:
        fail(f"--trainable {config.trainable!r} is not one of {', '.join(TRAINABLE_POLICIES)}.")
    steps = config.checkpointing_steps
    if steps is not None and str(steps) != "epoch":
        try:
            config.checkpointing_steps = int(steps)
        except ValueError:
            fail(f"--checkpointing_steps must be a positive integer or 'epoch', got {steps!r}.")
        if config.checkpointing_steps <= 0:
            fail(f"--checkpointing_steps must be a positive integer or 'epoch', got {steps!r}.")
    if config.compare_with_scratch:
        from .filters import is_scratch

        if is_scratch(config.filters):
            fail("--compare_with_scratch compares a filter bank with training from scratch; --filters is 'none'.")
        if config.resume_from_checkpoint not in (None, "latest"):
            fail("With --compare_with_scratch, --resume_from_checkpoint can only be 'latest' (each run resumes its "
                 "own).")  # fmt: skip
    if config.resume_from_checkpoint == "latest" and config.output_dir is None:
        fail("--resume_from_checkpoint latest looks in --output_dir: pass the output folder of the run to resume.")
    if config.push_to_hub and _hub_offline():
        fail("--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set; unset it or drop --push_to_hub.")
    return config


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def run_identity(config: argparse.Namespace) -> dict[str, Any]:
    """The arguments that define the run (see :data:`RUN_IDENTITY_KEYS`), for checkpoints and output folders."""
    return {key: getattr(config, key) for key in RUN_IDENTITY_KEYS}
