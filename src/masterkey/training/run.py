"""One transfer run, wired: :func:`train_transfer` turns a :class:`~.config.TrainingConfig` into an Accelerate run
(process set-up, CPU threads, output folder, data, the model with its filters, optimizer and schedule), hands it to
:func:`~.loop.training_loop`, and records what happened (``results.json``, the model folder, the card, the summary).

With ``compare_with_scratch`` it runs the configuration and the same model trained from scratch, one after the
other, and writes both side by side to ``comparison.json``. Messages (the summary, the comparison, resuming, the Hub
upload) go to the ``masterkey`` logger, from the main process only; ``examples/transfer.py`` prints them.

Speed (``benchmarks/train_loop.py``): the model and its inputs are in the channels_last layout in training and
evaluation (``--no_channels_last`` turns it off; the saved model and checkpoints are in the ordinary layout), the
optimizer is torch's fused AdamW where torch has one for the device (else its ``foreach`` form), frozen parameters
are left out of it, frozen depthwise convs of 7x7 and up compute their input's gradient as a transposed convolution
on CPU (``--no_transposed_depthwise_backward`` turns it off), memory freed by a CPU training step stays in the
process for the next (``--no_reuse_freed_memory`` turns it off), denormal floats are flushed to zero on CPU
(``--no_flush_denormal`` keeps them), and ``--torch_compile`` compiles the model for
training (evaluation runs the same weights eagerly), recording the compile time in ``results.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import (
    DataLoaderConfiguration,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)
from torch.utils.data import DataLoader
from transformers import get_scheduler

from .. import _timm
from ..errors import DatasetError, TrainingConfigError
from ..extract import find_depthwise_convs
from ..hub import check_upload, push_folder
from ..inject import TrainableParameters, freeze_depthwise
from ._cpu_memory import can_reuse_freed_memory
from ._denormals import can_flush_denormals
from ._depthwise_backward import has_large_frozen_depthwise
from .config import TrainingConfig, make_config, run_identity
from .data import (
    BuiltinDataset,
    ImageClassificationDataset,
    PreparedSplits,
    check_images,
    find_builtin_dataset,
    load_image_dataset,
    prepare_splits,
    timm_transforms,
)
from .filters import FilterResolver, resolve_filters
from .loop import (
    LoopState,
    evaluate_model,
    load_accuracy_metric,
    save_checkpoint,
    training_loop,
)
from .outputs import (
    CHECKPOINTS_DIR,
    COMPARISON_NAME,
    PUSH_COMMIT_MESSAGE,
    PUSH_IGNORE_PATTERNS,
    RESULTS_NAME,
    WEIGHTS_NAME,
    check_output_dir,
    claim_output_dir,
    find_checkpoint,
    library_versions,
    read_checkpoint_state,
    save_model,
    transfer_card,
    write_json,
)
from .results import FinalMetrics, ParameterCounts, RunResults

__all__ = ["train_transfer", "injection_plan", "slugify", "comparison_table", "summary"]

logger = logging.getLogger(__name__)


class _Extras(NamedTuple):
    """Datasets and named filters given to one :func:`train_transfer` call, consulted before the built-in ones."""

    datasets: Mapping[str, BuiltinDataset]
    filters: Mapping[str, FilterResolver]


# -- entry point -----------------------------------------------------------------------------------------------------
def train_transfer(
    config: TrainingConfig | None = None,
    *,
    extra_datasets: Mapping[str, BuiltinDataset] | None = None,
    extra_filters: Mapping[str, FilterResolver] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a timm model with a frozen master-key filter bank on an image-classification dataset.

    ``config`` is a :class:`~masterkey.training.TrainingConfig` (from :func:`~masterkey.training.make_config` or
    :func:`~masterkey.training.parse_args`); keyword ``options`` (the command-line names) set or override its
    fields. Returns the content of ``results.json``; with ``compare_with_scratch``, the comparison
    (``{"runs": {name: results}, ...}``, also written to ``comparison.json``).

    ``extra_datasets`` (name -> :class:`~masterkey.training.BuiltinDataset`) and ``extra_filters`` (name -> a function
    of the target model returning :class:`~masterkey.training.ResolvedFilters`) serve this call only: the names that
    ``dataset_name`` and ``filters`` give are looked up there before the built-in registries, which stay as they are.
    The configuration keeps the names, so a run's identity (and ``results.json``) is plain JSON either way.

    Raises:
        DatasetError, TrainingConfigError, UnsupportedModelError, IncompatibleBankError, BankNotFoundError: bad
            input, diagnosed before training starts where possible (every image is verified first).
        HubError: ``push_to_hub`` cannot upload (no token, an invalid repo id, ``HF_HUB_OFFLINE``); checked before
            anything is loaded or written.
        TrainingConfigError: training diverged (a NaN or infinite loss or weight), naming the step; the last
            checkpoint is kept and no model or results are written.

    Example:
        >>> results = masterkey.train_transfer(model="mobilenetv3_small_050", dataset_name="digits", resolution=32,
        ...                                    filters="none", num_train_epochs=1)
        >>> results["final"]["accuracy"]
    """
    if config is None:
        config = make_config(**options)
    elif not isinstance(config, TrainingConfig):
        raise TrainingConfigError(
            f"train_transfer takes a TrainingConfig (make_config(...), parse_args(...)) or keyword options, not "
            f"{type(config).__name__}."
        )
    elif options:
        config = make_config(**{**config.to_dict(), **options})
    else:
        config = dataclasses.replace(config).validate()  # a copy: the caller's config is left as it was
    extras = _Extras(dict(extra_datasets or {}), dict(extra_filters or {}))
    state = _distributed_state()
    output_dir = _resolve_output_dir(config, state)
    if config.compare_with_scratch:
        return _compare(config, output_dir, state, extras)
    return _train(config, output_dir, extras)


def _no_accelerator() -> bool:
    available = getattr(getattr(torch, "accelerator", None), "is_available", None)
    return not (available() if callable(available) else torch.cuda.is_available())


def _use_cpu() -> bool:
    """On a machine without an accelerator, a multi-process launch (``accelerate launch --multi_gpu
    --num_processes N`` or ``torchrun``) runs on CPU with gloo; without ``cpu=True`` Accelerate would start N
    independent single-process runs writing the same folder."""
    return _no_accelerator() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _distributed_state() -> PartialState:
    return PartialState(cpu=_use_cpu())


def _resolve_output_dir(config: TrainingConfig, state) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir)
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    if state.num_processes > 1:
        broadcast_object_list(stamp)  # every process must agree on the folder
    dataset = config.dataset_name or Path(config.train_dir).name
    return Path("outputs") / "transfer" / f"{config.model}_{slugify(dataset)}_{stamp[0]}"


def slugify(text: str) -> str:
    """A folder-name-safe form of ``text`` (runs of other characters become one dash).

    Example:
        >>> slugify("org/my bank")
        'org--my-bank'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text).strip("/").replace("/", "--")).strip("-") or "run"


def _compare(config: TrainingConfig, output_dir: Path, state: PartialState, extras: _Extras) -> dict[str, Any]:
    """The configuration with its filters and the same model from scratch, one after the other, side by side."""
    arms = {}
    for filters in (config.filters, "none"):
        sub = dataclasses.replace(config, filters=filters, compare_with_scratch=False)
        name = "scratch" if filters == "none" else filters
        arms[name] = (sub, output_dir / (name if filters == "none" else f"filters-{slugify(filters)}"))
    for sub, folder in arms.values():  # both uploads, before the first run trains
        _check_push(sub, folder)
    runs = {name: _train(sub, folder, extras) for name, (sub, folder) in arms.items()}
    table = comparison_table(runs)
    comparison = {"output_dir": str(output_dir), "table": table.splitlines(), "runs": runs}
    if state.is_main_process:
        write_json(output_dir / COMPARISON_NAME, comparison)
        logger.info(f"\n{table}\n\nboth runs: {output_dir}")
    return comparison


def comparison_table(runs: dict[str, dict[str, Any]]) -> str:
    """The runs of a comparison side by side: accuracy, top-5, trainable share, time and throughput per run.

    Example:
        >>> print(comparison_table(train_transfer(compare_with_scratch=True)["runs"]))
    """
    header = f"{'filters':<22}{'accuracy':>10}{'top-5':>8}{'trainable%':>12}{'train time':>12}{'samples/s':>11}"
    lines = [header, "-" * len(header)]
    for name, r in runs.items():
        top5 = r["final"].get("top5_accuracy")
        label = f"{name} (frozen)" if not r["filters"].get("scratch") and r["filters"]["frozen"] else name
        lines.append(
            f"{label:<22}{r['final']['accuracy']:>10.4f}{'' if top5 is None else f'{top5:.4f}':>8}"
            f"{r['parameters']['trainable_percent']:>11.2f}%{_duration(r['train_time_s']):>12}"
            f"{r['train_samples_per_second']:>11.1f}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- one run ---------------------------------------------------------------------------------------------------------
def _make_accelerator(config: TrainingConfig, output_dir: Path) -> Accelerator:
    kwargs: dict[str, Any] = {}
    if config.with_tracking:
        kwargs["log_with"] = config.report_to
        kwargs["project_config"] = ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        )
    # on a GPU, pinned batches are copied without blocking: the copy overlaps the step before
    loading = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed, non_blocking=_pin_memory())
    return Accelerator(
        cpu=_use_cpu(),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        dataloader_config=loading,
        **kwargs,
    )


def _pin_memory() -> bool:
    """Batches in pinned memory when training on a CUDA GPU."""
    return torch.cuda.is_available() and not _use_cpu()


def _set_cpu_threads(accelerator: Accelerator, config: TrainingConfig) -> int:
    """On CPU, use the available cores (shared among the local processes); Accelerate's launcher sets
    ``OMP_NUM_THREADS=1`` for a single CPU process, which would leave cores idle."""
    if accelerator.device.type != "cpu":
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    threads = config.cpu_threads or max(1, cores // max(1, local))
    torch.set_num_threads(threads)
    return threads


def _dataset_info(config: TrainingConfig, splits: PreparedSplits, extras: _Extras) -> dict[str, Any]:
    name = config.dataset_name
    spec = find_builtin_dataset(name, extras.datasets)
    builtin = spec is not None
    hub = bool(name) and not builtin and not Path(name).exists()
    if name is None:
        ident, pretty = "imagefolder", f"{_folder_name(config.train_dir)} (image folder)"
    else:
        ident, pretty = name, name if not builtin else f"{name} (masterkey built-in)"
    info = {}
    if builtin:
        info = {"description": spec.description, "source": spec.source, "license": spec.license}
    return {
        **info,
        "id": ident,
        "name": pretty,
        "hub": hub,
        "builtin": builtin,
        "config": config.dataset_config_name,
        "eval_split": splits.eval_source,
        "num_train": len(splits.train),
        "num_eval": len(splits.eval),
        "num_labels": splits.num_labels,
        "label_names": splits.label_names,
        "image_column": splits.image_column,
        "label_column": splits.label_column,
        "notes": splits.notes,
    }


def _folder_name(folder: str) -> str:
    """How a card names an image folder: its own name, or its parent's for a ``train`` split folder (never the path of
    the machine it was trained on)."""
    path = Path(folder).resolve()
    return path.parent.name if path.name.lower() in ("train", "training") and path.parent.name else path.name


def _zero_new_head(model: torch.nn.Module, *, pretrained: bool, num_labels: int) -> None:
    """A new classifier starts at zero, as fine-tuning recipes start it: every arm then begins at chance's loss ln K.
    timm's own init draws EfficientNet's head in ±1/sqrt(K), which starts a 10-class run at a loss near 8 and
    destabilises the from-scratch arm most. A pretrained head kept whole (the same classes) is left as it is."""
    if pretrained and (model.pretrained_cfg or {}).get("num_classes") == num_labels:
        return
    head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    for layer in (head.modules() if isinstance(head, torch.nn.Module) else ()):
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)


def _build_model(config: TrainingConfig, num_labels: int, extras: _Extras) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The timm model with the bank injected (or not, for ``none``) and the trainable policy applied; the filters
    record for results and the card."""
    pretrained = config.pretrained or _timm.names_pretrained_weights(config.model)
    model = _timm.create_model(config.model, num_classes=num_labels, pretrained=pretrained,
                               **(config.model_kwargs or {}))  # fmt: skip
    _zero_new_head(model, pretrained=pretrained, num_labels=num_labels)
    # where the body's weights came from (Hub id, commit, licence): the card's base_model; None for a fresh model
    body = {k: v for k, v in _timm.pretrained_provenance(model).items() if v is not None} if pretrained else None
    num_depthwise = len(find_depthwise_convs(model))
    resolved = resolve_filters(config.filters, model, extra_filters=extras.filters)
    if resolved is None:
        parameters = freeze_depthwise(model, trainable=config.trainable, freeze=False)
        return model, {"spec": "none", "scratch": True, "frozen": False, "num_depthwise": num_depthwise,
                       "injected": [], "untouched": [], "parameters": parameters, "body": body}  # fmt: skip
    model = resolved.apply(
        model, strict=not config.no_strict, freeze=not config.no_freeze, trainable=config.trainable,
        mapping=config.mapping,
    )  # fmt: skip
    report = model.masterkey_report
    modules = dict(model.named_modules())
    injected = [
        {"target": e.target, "source": e.source, "kernel": "x".join(map(str, modules[e.target].weight.shape[-2:])),
         "transforms": list(e.transforms)}  # fmt: skip
        for e in report.injected
    ]
    return model, {
        "spec": resolved.spec,
        "scratch": False,
        "frozen": report.frozen,
        "num_depthwise": num_depthwise,
        "injected": injected,
        "untouched": [e.target for e in report.skipped],
        "provenance": resolved.provenance(),
        "parameters": report.parameters,
        "body": body,
    }


def injection_plan(
    config: TrainingConfig, *, num_labels: int, extra_filters: Mapping[str, FilterResolver] | None = None
) -> list[dict[str, Any]]:
    """Where ``config``'s filters land in its model under today's mapping rules, without training: the list a run
    records as ``results.json``'s ``filters.injected`` (target, source, kernel, transforms), empty for ``none``. A
    change of a mapping rule changes no configuration, so this is how a finished run's record is checked against
    the code that would train it now.

    Example:
        >>> config = make_config(model="mobilenetv2_100", filters="imagenet-mobilenetv2", mapping="depth")
        >>> plan = injection_plan(config, num_labels=10)
        >>> plan[0]["target"], plan[0]["source"], plan[0]["transforms"]
        ('blocks.0.0.conv_dw', 'features.1.conv.0.0', ['copied'])
    """
    _, filters = _build_model(config, num_labels, _Extras({}, dict(extra_filters or {})))
    return filters["injected"]


def _place_model(model: torch.nn.Module, device: torch.device, *, channels_last: bool) -> torch.nn.Module:
    """The model on the device it trains on, in the channels_last layout when asked; before the optimizer is built,
    so that the optimizer's choice of implementation sees the parameters where they train."""
    if channels_last:
        return model.to(device=device, memory_format=torch.channels_last)
    return model.to(device=device)


@functools.cache
def _optimizer_implementation(device_type: str) -> str:
    """``"fused"`` where torch has a fused AdamW kernel for the device type (CUDA; CPU since torch 2.4), else
    ``"foreach"``: both compute AdamW's update within floating-point tolerance of torch's reference loop, faster."""
    probe = torch.zeros(1, device=device_type, requires_grad=True)
    probe.grad = torch.zeros_like(probe)
    try:
        torch.optim.AdamW([probe], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return "foreach"
    return "fused"


def _transposed_depthwise(config: TrainingConfig, model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the run computes its frozen large depthwise kernels' input gradient by transposed convolution: asked
    for, on CPU (a GPU's cuDNN backward was not timed), eager (inductor generates its own backward), and the model
    has such kernels (:func:`~._depthwise_backward.has_large_frozen_depthwise`)."""
    return (config.transposed_depthwise_backward and device.type == "cpu" and not config.torch_compile
            and has_large_frozen_depthwise(model))  # fmt: skip


def _reuse_freed_memory(config: TrainingConfig, device: torch.device) -> bool:
    """Whether the run keeps the memory its steps free for the next ones: asked for, on CPU (a GPU's memory is the
    device's, cached by torch already), and the C library allows it (:func:`~._cpu_memory.can_reuse_freed_memory`)."""
    return config.reuse_freed_memory and device.type == "cpu" and can_reuse_freed_memory()


#: The smallest input size at which channels_last is faster than the ordinary layout on a GPU (measured, see above).
CHANNELS_LAST_MIN_GPU_SIZE = 128
#: DataLoader workers per process on an accelerator when not given: one CPU worker starves a GPU (50% data wait on an
#: H100 at 64 px; 8 pinned workers: 0.5%, docs/benchmarks/gpu_train-h100.log).
GPU_LOADER_WORKERS = 8


def _loader_workers(config: TrainingConfig, accelerator: Accelerator) -> int:
    """``--dataloader_num_workers``, or by default 1 on CPU (a worker keeps decoding off the loop's path) and up to
    :data:`GPU_LOADER_WORKERS` on an accelerator (the cores shared among the local processes)."""
    if config.dataloader_num_workers is not None:
        return config.dataloader_num_workers
    if accelerator.device.type == "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return max(1, min(GPU_LOADER_WORKERS, cores // max(1, local)))


def _data_loaders(
    config: TrainingConfig, accelerator: Accelerator, train_ds, eval_ds
) -> tuple[DataLoader, DataLoader]:
    """The run's training and evaluation DataLoaders, before ``accelerator.prepare``: ``dataloader_num_workers``
    persistent worker processes, pinned memory on a GPU; the training one shuffled."""
    workers = _loader_workers(config, accelerator)
    loader_kwargs = {"num_workers": workers, "persistent_workers": workers > 0, "pin_memory": _pin_memory()}
    # a last batch of one would break BatchNorm in training: drop the incomplete last batch when there are more
    global_batch = config.per_device_train_batch_size * accelerator.num_processes
    train_loader = DataLoader(train_ds, batch_size=config.per_device_train_batch_size, shuffle=True,
                              drop_last=len(train_ds) >= global_batch, **loader_kwargs)  # fmt: skip
    eval_loader = DataLoader(eval_ds, batch_size=config.per_device_eval_batch_size, **loader_kwargs)
    return train_loader, eval_loader


def _optimizer(model: torch.nn.Module, config: TrainingConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only: a frozen parameter (``requires_grad`` false) gets no gradient, no
    optimizer state and no weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norms
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    implementation = _optimizer_implementation(torch.device(device).type)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate, **{implementation: True})


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` for training, for static shapes (``dynamic=False``): every training batch of a run has the
    same shape, and a process that compiles for a second input size (a grid of runs, the benchmark) then compiles a
    graph for that size too, instead of one for any size (which compiled several times slower here)."""
    return torch.compile(model, dynamic=False)


def _implementation(optimizer: torch.optim.Optimizer) -> str:
    return next((name for name in ("fused", "foreach") if optimizer.defaults.get(name)), "for-loop")


def _compile_time(state: LoopState) -> float | None:
    """How much longer the session's first optimizer step took than the mean of its other steps: with
    ``torch.compile``, the compiling (the forward and backward graphs are compiled in the first step)."""
    if state.first_step_time is None:
        return None
    steps = state.completed_steps - (state.resumed_step or 0)
    rest = (state.session_train_time - state.first_step_time) / (steps - 1) if steps > 1 else 0.0
    return max(0.0, state.first_step_time - rest)


def _repo_id(config: TrainingConfig, output_dir: Path) -> str:
    return config.hub_model_id or output_dir.name


def _check_push(config: TrainingConfig, output_dir: Path) -> None:
    """With ``push_to_hub``, refuse a run whose upload would fail (no token, invalid repo id, offline) before any
    data is loaded: otherwise the whole run trains first and fails at its very end."""
    if config.push_to_hub:
        check_upload(_repo_id(config, output_dir), token=config.hub_token)


def _check_images(accelerator: Accelerator, config: TrainingConfig, splits: PreparedSplits, extras: _Extras) -> None:
    """Verify every training and evaluation image before the first step, in the main process (the others get its
    verdict), so that a broken file is one line naming it rather than a DataLoader worker's traceback after some
    steps. Built-in datasets are encoded by masterkey from arrays: nothing to check."""
    name = config.dataset_name
    if find_builtin_dataset(name, extras.datasets) is not None and not Path(name).exists():
        return
    problem: list[str | None] = [None]
    if accelerator.is_main_process:
        start = time.perf_counter()
        source = name or config.train_dir
        try:
            checked = check_images(splits.train, image_column=splits.image_column, split=splits.train_source,
                                   row_ids=splits.train_rows, source=source)  # fmt: skip
            checked += check_images(splits.eval, image_column=splits.image_column, split=splits.eval_source,
                                    row_ids=splits.eval_rows, source=source)  # fmt: skip
        except DatasetError as e:
            problem[0] = str(e)
        else:
            logger.debug("verified %d images in %.1f s", checked, time.perf_counter() - start)
    if accelerator.num_processes > 1:
        broadcast_object_list(problem)
    if problem[0] is not None:
        raise DatasetError(problem[0])


def _train(config: TrainingConfig, output_dir: Path, extras: _Extras) -> dict[str, Any]:
    wall_start = time.perf_counter()
    _check_push(config, output_dir)
    # before any data is loaded: the typed error with close matches, or the tags there are
    _timm.check_name(config.model, pretrained=config.pretrained or _timm.names_pretrained_weights(config.model))
    accelerator = _make_accelerator(config, output_dir)
    threads = _set_cpu_threads(accelerator, config)
    identity = {**run_identity(config), "num_processes": accelerator.num_processes}
    checkpoint = _claim(accelerator, config, output_dir, identity)
    with accelerator.main_process_first():
        splits, model, filters = _load(config, extras)
        metric = load_accuracy_metric()
    _check_images(accelerator, config, splits, extras)

    train_tf, eval_tf, data_config = timm_transforms(model, config.resolution, crop_scale=config.crop_scale)
    common = {"image_column": splits.image_column, "label_column": splits.label_column,
              "label_to_id": splits.label_to_id}  # fmt: skip
    # seeded: the augmentation depends on (seed, epoch, row) only, so a resumed run is the run it replaces
    train_ds = ImageClassificationDataset(splits.train, transform=train_tf, row_ids=splits.train_rows, split="train",
                                          seed=config.seed, **common)  # fmt: skip
    eval_ds = ImageClassificationDataset(splits.eval, transform=eval_tf, row_ids=splits.eval_rows,
                                         split=splits.eval_source, **common)  # fmt: skip
    train_loader, eval_loader = _data_loaders(config, accelerator, train_ds, eval_ds)

    # channels_last where it is faster: always on CPU; on a GPU from 128 px (an H100 in bf16: 2.2x at 224 px, 0.73x at
    # 64 px: docs/benchmarks/gpu_train-h100.log); every later use of the layout follows this one decision
    channels_last = config.channels_last and (
        accelerator.device.type == "cpu" or data_config["input_size"][-1] >= CHANNELS_LAST_MIN_GPU_SIZE
    )
    config = dataclasses.replace(config, channels_last=channels_last)
    model = _place_model(model, accelerator.device, channels_last=config.channels_last)
    optimizer = _optimizer(model, config, accelerator.device)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    # compiled for training only: evaluating and saving use the same parameters through the eager module (an
    # evaluation compiled too would compile again, for eval mode and for the last, smaller batch)
    train_model = _compiled(model) if config.torch_compile else model
    config = dataclasses.replace(config, transposed_depthwise_backward=_transposed_depthwise(config, model,
                                                                                             accelerator.device),
                                 reuse_freed_memory=_reuse_freed_memory(config, accelerator.device),
                                 flush_denormal=config.flush_denormal and accelerator.device.type == "cpu"
                                 and can_flush_denormals())  # fmt: skip
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or config.num_train_epochs * steps_per_epoch
    scheduler = accelerator.prepare(get_scheduler(
        config.lr_scheduler_type,
        optimizer=optimizer.optimizer,
        num_warmup_steps=config.num_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    ))  # fmt: skip

    if config.with_tracking:
        accelerator.init_trackers("masterkey-transfer", config=_tracker_config(config))
    state = LoopState(max_steps=max_steps, num_epochs=math.ceil(max_steps / steps_per_epoch))
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state.restore(read_checkpoint_state(checkpoint))
        state.last_checkpoint = str(checkpoint)
        if accelerator.is_main_process:
            logger.info(f"resumed from {checkpoint} (step {state.completed_steps}, epoch {state.epoch})")
    top_k = 5 if splits.num_labels > 5 else 1

    def on_epoch_end(epoch: int, id_log: IO[str] | None) -> dict[str, Any]:
        return evaluate_model(accelerator, model, eval_loader, metric, top_k=top_k, id_log=id_log, epoch=epoch,
                              channels_last=config.channels_last)  # fmt: skip

    def save(name: str) -> None:
        folder = output_dir / CHECKPOINTS_DIR / name
        save_checkpoint(accelerator, folder, state.to_dict(identity), total_limit=config.checkpoints_total_limit)
        state.last_checkpoint = str(folder)

    _run_loop(accelerator, config, output_dir, train_model, optimizer, scheduler, train_loader, state,
              resumed=checkpoint is not None, on_epoch_end=on_epoch_end, save=save)  # fmt: skip

    compile_time = _compile_time(state) if config.torch_compile else None
    results = None
    if accelerator.is_main_process:
        if compile_time is not None:
            logger.info(f"torch.compile: the first step took {state.first_step_time:.1f} s, about "
                        f"{compile_time:.1f} s of it compiling")  # fmt: skip
        record = RunResults(
            output_dir=str(output_dir),
            model=config.model,
            resolution=data_config["input_size"][-1],
            **_training_record(state, checkpoint),
            parameters=_parameters_record(filters.pop("parameters")),
            filters=filters,
            dataset=_dataset_info(config, splits, extras),
            wall_time_s=time.perf_counter() - wall_start,
            num_processes=accelerator.num_processes,
            device=str(accelerator.device),
            cpu_threads_per_process=threads,
            mixed_precision=accelerator.mixed_precision,
            optimizer={"name": "AdamW", "implementation": _implementation(optimizer.optimizer)},
            compile_time_s=compile_time,
            data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
            config=_public_config(config) | {"output_dir": str(output_dir)},
            versions=library_versions(),
        )
        results = record.to_dict()
        _write_outputs(accelerator, config, output_dir, model, results, label_names=splits.label_names,
                       data_config=data_config)  # fmt: skip
    accelerator.wait_for_everyone()
    if config.with_tracking:
        accelerator.end_training()
    if results is None:  # other processes read what the main process wrote
        results = json.loads((output_dir / RESULTS_NAME).read_text())
    accelerator.free_memory()
    return results


def _claim(accelerator: Accelerator, config: TrainingConfig, output_dir: Path,
           identity: dict[str, Any]) -> Path | None:  # fmt: skip
    """Check the output folder and the checkpoint to resume from (every process, before any process writes), then
    claim the folder for this run (the main process); returns the checkpoint, or ``None``."""
    checkpoint = find_checkpoint(config.resume_from_checkpoint, output_dir, identity)
    clear = check_output_dir(
        output_dir, identity, overwrite=config.overwrite_output_dir, resume=config.resume_from_checkpoint,
        checkpoint=checkpoint,
    )  # fmt: skip
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        claim_output_dir(output_dir, identity, clear=clear)
    accelerator.wait_for_everyone()
    return checkpoint


def _load(config: TrainingConfig, extras: _Extras) -> tuple[PreparedSplits, torch.nn.Module, dict[str, Any]]:
    """The run's data splits, and its model with the filters injected (seeded first: the same initial weights with
    and without filters)."""
    dsd = load_image_dataset(
        config.dataset_name,
        config_name=config.dataset_config_name,
        train_dir=config.train_dir,
        validation_dir=config.validation_dir,
        extra_datasets=extras.datasets,
    )
    splits = prepare_splits(
        dsd,
        image_column=config.image_column_name,
        label_column=config.label_column_name,
        train_val_split=config.train_val_split,
        validation_from_train=config.validation_from_train,
        max_train_samples=config.max_train_samples,
        max_eval_samples=config.max_eval_samples,
        seed=config.seed,
        source=config.dataset_name or config.train_dir,
    )
    set_seed(config.seed)  # the same initial weights with and without filters
    model, filters = _build_model(config, splits.num_labels, extras)
    return splits, model, filters


def _run_loop(accelerator: Accelerator, config: TrainingConfig, output_dir: Path, model: torch.nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, train_loader: Any, state: LoopState, *,
              resumed: bool, on_epoch_end: Any, save: Any) -> None:  # fmt: skip
    """:func:`training_loop` with the run's settings, the sample-id log open around it (``--log_sample_ids``), and
    the trackers closed when it stops on an error."""
    id_log = None
    if config.log_sample_ids and accelerator.is_main_process:
        id_log = (output_dir / "sample_ids.jsonl").open("a")
        if resumed:
            id_log.write(json.dumps({"resumed_from_step": state.completed_steps}) + "\n")
    try:
        training_loop(
            accelerator,
            model,
            optimizer,
            scheduler,
            train_loader,
            state,
            on_epoch_end=lambda epoch: on_epoch_end(epoch, id_log),
            checkpointing_steps=config.checkpointing_steps,
            on_checkpoint=save,
            log_sample_ids=config.log_sample_ids,
            progress=not config.disable_tqdm,
            id_log=id_log,
            with_tracking=config.with_tracking,
            channels_last=config.channels_last,
            transposed_depthwise=config.transposed_depthwise_backward,
            reuse_memory=config.reuse_freed_memory,
            flush_denormal=config.flush_denormal,
        )
    except BaseException:  # a run stopped by an error (divergence, a broken image) still closes its trackers
        if config.with_tracking:
            accelerator.end_training()
        raise
    finally:
        if id_log is not None:
            id_log.close()


def _write_outputs(accelerator: Accelerator, config: TrainingConfig, output_dir: Path, model: torch.nn.Module,
                   results: dict[str, Any], *, label_names: Sequence[str],
                   data_config: dict[str, Any]) -> None:  # fmt: skip
    """The main process's outputs of a finished run: the model, its card, ``results.json``, the summary in the log,
    and the push to the Hub (``--push_to_hub``)."""
    save_model(accelerator.unwrap_model(model), output_dir, label_names=label_names, data_config=data_config)
    results["weights_sha256"] = _timm.sha256_file(output_dir / WEIGHTS_NAME)
    repo_id = _repo_id(config, output_dir) if config.push_to_hub else None
    transfer_card(results, repo_id=repo_id).save(str(output_dir / "README.md"))
    write_json(output_dir / RESULTS_NAME, results)
    logger.info(summary(results))
    if config.push_to_hub:
        url = push_folder(output_dir, repo_id, token=config.hub_token, commit_message=PUSH_COMMIT_MESSAGE,
                          ignore_patterns=PUSH_IGNORE_PATTERNS)  # fmt: skip
        logger.info(f"pushed to {url}")


def _training_record(state: LoopState, checkpoint: Path | None) -> dict[str, Any]:
    """What the loop measured: final and per-epoch metrics, steps, time, throughput."""
    final = state.history[-1]
    session = state.session_train_time
    return {
        "final": FinalMetrics(**{k: final.get(k) for k in ("accuracy", "top5_accuracy", "eval_loss", "train_loss",
                                                            "num_eval_examples")}),  # fmt: skip
        "epochs_history": state.history,
        "completed_steps": state.completed_steps,
        "max_steps": state.max_steps,
        "epochs": state.num_epochs,
        "resumed_from": None if checkpoint is None else {"checkpoint": str(checkpoint), "step": state.resumed_step},
        "train_time_s": state.train_time,
        "train_samples_per_second": state.samples / session if session else 0.0,
        "data_wait_share": state.data_time / session if session else 0.0,
        "train_samples_seen": state.samples_total,
    }


def _parameters_record(parameters: TrainableParameters) -> ParameterCounts:
    return ParameterCounts(trainable=parameters.trainable, total=parameters.total,
                           trainable_percent=parameters.percent)  # fmt: skip


def _public_config(config: TrainingConfig) -> dict[str, Any]:
    """The configuration as written to results.json, trackers and cards: the Hub token is never written."""
    return {k: ("<redacted>" if k == "hub_token" and v else v) for k, v in config.to_dict().items()}


def _tracker_config(config: TrainingConfig) -> dict[str, Any]:
    """Scalars only (TensorBoard's hparams accept nothing else)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _public_config(config).items()}


def summary(results: dict[str, Any]) -> str:
    """The one-screen summary logged at the end of a run.

    Example:
        >>> print(summary(json.loads(Path("run/results.json").read_text())))
    """
    r, data, final = results, results["dataset"], results["final"]
    filters = "none (from scratch)" if r["filters"].get("scratch") else (
        f"{r['filters']['spec']}: {len(r['filters']['injected'])}/{r['filters']['num_depthwise']} depthwise convs "
        f"{'frozen' if r['filters']['frozen'] else 'injected (trainable)'}"
    )  # fmt: skip
    lines = [
        "",
        f"{r['model']} on {data['name']}: {data['num_train']:,} train / {data['num_eval']:,} eval images "
        f"({data['eval_split']}), {r['resolution']} px, {data['num_labels']} classes",
        f"filters    {filters}",
        f"params     {TrainableParameters(r['parameters']['trainable'], r['parameters']['total'])}",
        "epoch  train_loss  eval_loss  accuracy  top-5",
    ]
    for h in r["epochs_history"]:
        top5 = "" if h.get("top5_accuracy") is None else f"{h['top5_accuracy']:.4f}"
        lines.append(
            f"{h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['eval_loss']:>9.4f}  {h['accuracy']:>8.4f}  {top5}"
        )
    top5 = "" if final.get("top5_accuracy") is None else f" | top-5 {final['top5_accuracy']:.4f}"
    compiled = "" if r.get("compile_time_s") is None else f"compiled in {_duration(r['compile_time_s'])} | "
    lines += [
        f"accuracy   {final['accuracy']:.4f}{top5} | {r['completed_steps']} steps | "
        f"train {_duration(r['train_time_s'])}"
        f" | {r['train_samples_per_second']:.1f} samples/s | data wait {100 * r['data_wait_share']:.1f}% | "
        f"{compiled}{r['num_processes']} x {r['device']}",
        f"saved to   {r['output_dir']}",
    ]
    return "\n".join(lines)


