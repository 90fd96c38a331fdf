"""The Accelerate training loop of a transfer run: build, train, evaluate, checkpoint, report.

:func:`train_transfer` runs one configuration (or, with ``compare_with_scratch``, the configuration and the same
model trained from scratch) and returns what it wrote to ``results.json``. :func:`fit` is the loop itself, shared
with ``benchmarks/train_loop.py``.

Resuming: a checkpoint is ``accelerator.save_state`` plus ``masterkey_state.json`` (epoch, batches consumed in that
epoch, completed optimizer steps, history, configuration). Shuffling uses Accelerate's seedable sampler (the order of
epoch ``e`` depends only on ``seed`` and ``e``), and a resumed epoch skips the batches already consumed with
``accelerator.skip_first_batches``, so a resumed run sees exactly the batches the uninterrupted run would have seen.
A checkpoint is written to ``<name>.tmp`` and renamed when complete: killing a run mid-save leaves no half
checkpoint for ``latest`` to pick up.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

from .. import _timm
from ..inject import TrainableParameters
from .args import make_config, run_identity, validate_config
from .outputs import (
    CHECKPOINTS_DIR,
    COMPARISON_NAME,
    RESULTS_NAME,
    STATE_NAME,
    check_output_dir,
    claim_output_dir,
    find_checkpoint,
    library_versions,
    push_folder,
    read_checkpoint_state,
    save_model,
    transfer_card,
    write_json,
)

__all__ = ["train_transfer", "fit", "evaluate_model", "FitState", "ACCURACY_METRIC_PATH", "load_accuracy_metric"]

#: The ``evaluate`` metric module shipped with masterkey (loaded by path: nothing is fetched from the Hub).
ACCURACY_METRIC_PATH = Path(__file__).resolve().parent.parent / "metrics" / "accuracy" / "accuracy.py"


def load_accuracy_metric():
    """``evaluate.load`` of :data:`ACCURACY_METRIC_PATH`, kept in memory (no cache files, safe in every process)."""
    import evaluate

    return evaluate.load(str(ACCURACY_METRIC_PATH), keep_in_memory=True)


# -- entry point -----------------------------------------------------------------------------------------------------
def train_transfer(config: argparse.Namespace | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train a timm model with a frozen master-key filter bank on an image-classification dataset.

    ``config`` comes from :func:`masterkey.training.parse_args`; keyword arguments (the command-line names) set or
    override options. Returns the content of ``results.json``; with ``compare_with_scratch``, the comparison
    (``{"runs": {name: results}, ...}``, also written to ``comparison.json``).

    Raises:
        DatasetError, TrainingConfigError, UnsupportedModelError, IncompatibleBankError, BankNotFoundError: bad
            input, diagnosed before training starts where possible.

    Example:
        >>> results = masterkey.train_transfer(model="mobilenetv3_small_050", dataset_name="digits", resolution=32,
        ...                                    filters="none", num_train_epochs=1)
        >>> results["final"]["accuracy"]
    """
    if config is None:
        config = make_config(**kwargs)
    elif kwargs:
        config = make_config(**{**vars(config), **kwargs})
    else:
        config = validate_config(copy.copy(config))
    state = _distributed_state()
    output_dir = _resolve_output_dir(config, state)
    if config.compare_with_scratch:
        return _compare(config, output_dir, state)
    return _train(config, output_dir)


def _no_accelerator() -> bool:
    available = getattr(getattr(torch, "accelerator", None), "is_available", None)
    return not (available() if callable(available) else torch.cuda.is_available())


def _use_cpu() -> bool:
    """On a machine without an accelerator, a multi-process launch (``accelerate launch --multi_gpu
    --num_processes N`` or ``torchrun``) runs on CPU with gloo; without ``cpu=True`` Accelerate would start N
    independent single-process runs writing the same folder."""
    return _no_accelerator() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _distributed_state():
    from accelerate import PartialState

    return PartialState(cpu=_use_cpu())


def _resolve_output_dir(config: argparse.Namespace, state) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir)
    from accelerate.utils import broadcast_object_list

    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    if state.num_processes > 1:
        broadcast_object_list(stamp)  # every process must agree on the folder
    dataset = config.dataset_name or Path(config.train_dir).name
    return Path("outputs") / "transfer" / f"{config.model}_{slugify(dataset)}_{stamp[0]}"


def slugify(text: str) -> str:
    """A folder-name-safe form of ``text`` (runs of other characters become one dash)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text).strip("/").replace("/", "--")).strip("-") or "run"


def _compare(config: argparse.Namespace, output_dir: Path, state) -> dict[str, Any]:
    """The configuration with its filters and the same model from scratch, one after the other, side by side."""
    runs = {}
    for filters in (config.filters, "none"):
        sub = copy.copy(config)
        sub.filters, sub.compare_with_scratch = filters, False
        name = "scratch" if filters == "none" else filters
        runs[name] = _train(sub, output_dir / (name if filters == "none" else f"filters-{slugify(filters)}"))
    table = comparison_table(runs)
    comparison = {"output_dir": str(output_dir), "table": table.splitlines(), "runs": runs}
    if state.is_main_process:
        write_json(output_dir / COMPARISON_NAME, comparison)
        print(f"\n{table}\n\nboth runs: {output_dir}", flush=True)
    return comparison


def comparison_table(runs: dict[str, dict[str, Any]]) -> str:
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
def _make_accelerator(config: argparse.Namespace, output_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    kwargs: dict[str, Any] = {}
    if config.with_tracking:
        kwargs["log_with"] = config.report_to
        kwargs["project_config"] = ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        )
    return Accelerator(
        cpu=_use_cpu(),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        **kwargs,
    )


def _set_cpu_threads(accelerator, config: argparse.Namespace) -> int:
    """On CPU, use the available cores (shared among the local processes); Accelerate's launcher sets
    ``OMP_NUM_THREADS=1`` for a single CPU process, which would leave cores idle."""
    if accelerator.device.type != "cpu":
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    threads = config.cpu_threads or max(1, cores // max(1, local))
    torch.set_num_threads(threads)
    return threads


def _dataset_info(config: argparse.Namespace, splits) -> dict[str, Any]:
    from .data import BUILTIN_DATASETS

    name = config.dataset_name
    builtin = name in BUILTIN_DATASETS
    hub = bool(name) and not builtin and not Path(name).exists()
    if name is None:
        ident, pretty = "imagefolder", f"imagefolder {config.train_dir}"
    else:
        ident, pretty = name, name if not builtin else f"{name} (masterkey built-in)"
    info = {}
    if builtin:
        spec = BUILTIN_DATASETS[name]
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


def _build_model(config: argparse.Namespace, num_labels: int):
    """The timm model with the bank injected (or not, for ``none``) and the trainable policy applied; the filters
    record for results and the card."""
    from ..extract import find_depthwise_convs
    from ..inject import freeze_depthwise
    from .filters import resolve_filters

    model = _timm.create_model(config.model, num_classes=num_labels)
    num_depthwise = len(find_depthwise_convs(model))
    resolved = resolve_filters(config.filters, model)
    if resolved is None:
        parameters = freeze_depthwise(model, trainable=config.trainable, freeze=False)
        return model, {"spec": "none", "scratch": True, "frozen": False, "num_depthwise": num_depthwise,
                       "injected": [], "untouched": [], "parameters": parameters}  # fmt: skip
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
    }


def _optimizer(model: torch.nn.Module, config: argparse.Namespace) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and norms
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.learning_rate)


def _train(config: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from .data import ImageClassificationDataset, load_image_dataset, prepare_splits, timm_transforms

    wall_start = time.perf_counter()
    if not timm.is_model(config.model):  # before any data is loaded: the typed error with close matches
        _timm.create_model(config.model)
    accelerator = _make_accelerator(config, output_dir)
    threads = _set_cpu_threads(accelerator, config)
    identity = {**run_identity(config), "num_processes": accelerator.num_processes}

    # the folder and the checkpoint are checked by every process before any process writes
    checkpoint = find_checkpoint(config.resume_from_checkpoint, output_dir, identity)
    clear = check_output_dir(
        output_dir, identity, overwrite=config.overwrite_output_dir, resume=config.resume_from_checkpoint,
        checkpoint=checkpoint,
    )  # fmt: skip
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        claim_output_dir(output_dir, identity, clear=clear)
    accelerator.wait_for_everyone()

    with accelerator.main_process_first():
        dsd = load_image_dataset(
            config.dataset_name,
            config_name=config.dataset_config_name,
            train_dir=config.train_dir,
            validation_dir=config.validation_dir,
        )
        splits = prepare_splits(
            dsd,
            image_column=config.image_column_name,
            label_column=config.label_column_name,
            train_val_split=config.train_val_split,
            max_train_samples=config.max_train_samples,
            max_eval_samples=config.max_eval_samples,
            seed=config.seed,
            source=config.dataset_name or config.train_dir,
        )
        set_seed(config.seed)  # the same initial weights with and without filters
        model, filters = _build_model(config, splits.num_labels)
        metric = load_accuracy_metric()

    train_tf, eval_tf, data_config = timm_transforms(model, config.resolution, crop_scale=config.crop_scale)
    common = {"image_column": splits.image_column, "label_column": splits.label_column,
              "label_to_id": splits.label_to_id}  # fmt: skip
    train_ds = ImageClassificationDataset(splits.train, transform=train_tf, row_ids=splits.train_rows, split="train",
                                          **common)  # fmt: skip
    eval_ds = ImageClassificationDataset(splits.eval, transform=eval_tf, row_ids=splits.eval_rows,
                                         split=splits.eval_source, **common)  # fmt: skip
    workers = config.dataloader_num_workers
    loader_kwargs = {"num_workers": workers, "persistent_workers": workers > 0}
    # a last batch of one would break BatchNorm in training: drop the incomplete last batch when there are more
    global_batch = config.per_device_train_batch_size * accelerator.num_processes
    train_loader = DataLoader(train_ds, batch_size=config.per_device_train_batch_size, shuffle=True,
                              drop_last=len(train_ds) >= global_batch, **loader_kwargs)  # fmt: skip
    eval_loader = DataLoader(eval_ds, batch_size=config.per_device_eval_batch_size, **loader_kwargs)

    optimizer = _optimizer(model, config)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or config.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    scheduler = get_scheduler(
        config.lr_scheduler_type,
        optimizer=optimizer.optimizer,
        num_warmup_steps=config.num_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)

    if config.with_tracking:
        accelerator.init_trackers("masterkey-transfer", config=_tracker_config(config))

    state = FitState(max_steps=max_steps, num_epochs=num_epochs)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state.restore(read_checkpoint_state(checkpoint))
        accelerator.print(f"resumed from {checkpoint} (step {state.completed_steps}, epoch {state.epoch})")

    id_log = None
    if config.log_sample_ids and accelerator.is_main_process:
        id_log = (output_dir / "sample_ids.jsonl").open("a")
        if checkpoint is not None:
            id_log.write(json.dumps({"resumed_from_step": state.completed_steps}) + "\n")
    top_k = 5 if splits.num_labels > 5 else 1

    def on_epoch_end(epoch: int) -> dict[str, Any]:
        return evaluate_model(accelerator, model, eval_loader, metric, top_k=top_k, id_log=id_log, epoch=epoch)

    def save(name: str) -> None:
        save_checkpoint(accelerator, output_dir / CHECKPOINTS_DIR / name, state.to_dict(identity))

    fit(
        accelerator,
        model,
        optimizer,
        scheduler,
        train_loader,
        state,
        on_epoch_end=on_epoch_end,
        checkpointing_steps=config.checkpointing_steps,
        on_checkpoint=save,
        log_sample_ids=config.log_sample_ids,
        id_log=id_log,
        with_tracking=config.with_tracking,
    )
    if id_log is not None:
        id_log.close()

    results = None
    if accelerator.is_main_process:
        results = {
            "output_dir": str(output_dir),
            "model": config.model,
            "resolution": data_config["input_size"][-1],
            **_training_record(state, checkpoint),
            "parameters": _parameters_record(filters.pop("parameters")),
            "filters": filters,
            "dataset": _dataset_info(config, splits),
            "wall_time_s": time.perf_counter() - wall_start,
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "cpu_threads_per_process": threads,
            "mixed_precision": accelerator.mixed_precision,
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
            "config": _public_config(config) | {"output_dir": str(output_dir)},
            "versions": library_versions(),
        }
        unwrapped = accelerator.unwrap_model(model)
        save_model(unwrapped, output_dir, label_names=splits.label_names, data_config=data_config)
        repo_id = (config.hub_model_id or output_dir.name) if config.push_to_hub else None
        transfer_card(results, repo_id=repo_id).save(str(output_dir / "README.md"))
        write_json(output_dir / RESULTS_NAME, results)
        print(summary(results), flush=True)
        if config.push_to_hub:
            print(f"pushed to {push_folder(output_dir, repo_id, token=config.hub_token)}", flush=True)
    accelerator.wait_for_everyone()
    if config.with_tracking:
        accelerator.end_training()
    if results is None:  # other processes read what the main process wrote
        results = json.loads((output_dir / RESULTS_NAME).read_text())
    accelerator.free_memory()
    return results


def _training_record(state: FitState, checkpoint: Path | None) -> dict[str, Any]:
    """What the loop measured: final and per-epoch metrics, steps, time, throughput."""
    final = state.history[-1]
    session = state.session_train_time
    return {
        "final": {k: final.get(k) for k in ("accuracy", "top5_accuracy", "eval_loss", "train_loss",
                                             "num_eval_examples")},  # fmt: skip
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


def _parameters_record(parameters: TrainableParameters) -> dict[str, Any]:
    return {"trainable": parameters.trainable, "total": parameters.total, "trainable_percent": parameters.percent}


def _public_config(config: argparse.Namespace) -> dict[str, Any]:
    """The configuration as written to results.json, trackers and cards: the Hub token is never written."""
    return {k: ("<redacted>" if k == "hub_token" and v else v) for k, v in vars(config).items()}


def _tracker_config(config: argparse.Namespace) -> dict[str, Any]:
    """Scalars only (TensorBoard's hparams accept nothing else)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _public_config(config).items()}


def summary(results: dict[str, Any]) -> str:
    """The one-screen summary printed at the end of a run."""
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
    lines += [
        f"accuracy   {final['accuracy']:.4f}{top5} | {r['completed_steps']} steps | "
        f"train {_duration(r['train_time_s'])}"
        f" | {r['train_samples_per_second']:.1f} samples/s | data wait {100 * r['data_wait_share']:.1f}% | "
        f"{r['num_processes']} x {r['device']}",
        f"saved to   {r['output_dir']}",
    ]
    return "\n".join(lines)


# -- the loop --------------------------------------------------------------------------------------------------------
@dataclass
class FitState:
    """Where a run is, and what it has measured; saved in every checkpoint."""

    max_steps: int
    num_epochs: int
    epoch: int = 0
    batches_in_epoch: int = 0
    completed_steps: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_time: float = 0.0  # cumulative over resumed sessions
    samples_total: int = 0  # cumulative
    resumed_step: int | None = None
    # this session only
    session_train_time: float = 0.0
    samples: int = 0
    data_time: float = 0.0

    def to_dict(self, identity: dict[str, Any]) -> dict[str, Any]:
        keys = ("epoch", "batches_in_epoch", "completed_steps", "loss_sum", "loss_count", "history", "train_time",
                "samples_total", "max_steps", "num_epochs")  # fmt: skip
        return {"identity": identity, **{k: getattr(self, k) for k in keys}}

    def restore(self, saved: dict[str, Any]) -> None:
        for key in ("epoch", "batches_in_epoch", "completed_steps", "loss_sum", "loss_count", "history",
                    "train_time", "samples_total"):  # fmt: skip
            setattr(self, key, saved[key])
        self.resumed_step = self.completed_steps


def save_checkpoint(accelerator, folder: Path, state: dict[str, Any]) -> None:
    """``accelerator.save_state`` into ``<folder>.tmp``, then the state file, then a rename: complete or absent."""
    import shutil

    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_NAME, state)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    accelerator.wait_for_everyone()


def fit(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    train_loader,
    state: FitState,
    *,
    on_epoch_end: Callable[[int], dict[str, Any]] | None = None,
    checkpointing_steps: int | str | None = None,
    on_checkpoint: Callable[[str], None] | None = None,
    log_sample_ids: bool = False,
    id_log=None,
    with_tracking: bool = False,
    progress: bool = True,
) -> FitState:
    """Train ``model`` (prepared by ``accelerator``) for ``state.max_steps`` optimizer steps, starting where
    ``state`` says (mid-epoch included), calling ``on_epoch_end(epoch)`` for metrics after each epoch and
    ``on_checkpoint(name)`` every ``checkpointing_steps`` steps (or after each epoch for ``"epoch"``).

    Batches are dicts with ``pixel_values`` and ``labels`` (and ``ids`` when ``log_sample_ids``). Besides the loss
    it measures the time spent waiting for data (``state.data_time``) against the whole loop
    (``state.session_train_time``).
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=state.max_steps, initial=state.completed_steps, desc="training", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))  # fmt: skip
    n_proc = accelerator.num_processes
    loss_sum = torch.tensor(state.loss_sum, device=accelerator.device)
    # an epoch interrupted at its last step (checkpoint, then kill) still needs its evaluation
    while state.epoch < state.num_epochs and (state.completed_steps < state.max_steps or state.batches_in_epoch):
        model.train()
        train_loader.set_epoch(state.epoch)
        loader = train_loader
        if state.batches_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
        start = time.perf_counter()
        iterator = iter(loader)
        while state.completed_steps < state.max_steps:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            state.data_time += time.perf_counter() - t0
            with accelerator.accumulate(model):
                logits = model(batch["pixel_values"])
                loss = F.cross_entropy(logits, batch["labels"])
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            n = batch["labels"].shape[0]
            loss_sum += loss.detach().float() * n
            state.loss_count += n
            state.batches_in_epoch += 1
            state.samples += n * n_proc
            state.samples_total += n * n_proc
            if log_sample_ids:
                ids = accelerator.gather(batch["ids"])
                if id_log is not None:
                    id_log.write(json.dumps({"epoch": state.epoch, "batch": state.batches_in_epoch - 1,
                                             "ids": ids.tolist()}) + "\n")  # fmt: skip
                    id_log.flush()
            if accelerator.sync_gradients:
                state.completed_steps += 1
                bar.update(1)
                every = checkpointing_steps if isinstance(checkpointing_steps, int) and on_checkpoint else 0
                if every and state.completed_steps % every == 0:
                    state.loss_sum = loss_sum.item()
                    _timed_pause(state, start, lambda: on_checkpoint(f"step_{state.completed_steps}"))
                    start = time.perf_counter()
        elapsed = time.perf_counter() - start
        state.session_train_time += elapsed
        state.train_time += elapsed

        count = torch.tensor(float(state.loss_count), device=loss_sum.device)
        total = accelerator.reduce(torch.stack([loss_sum, count]), "sum")
        metrics = {"epoch": state.epoch, "step": state.completed_steps,
                   "train_loss": (total[0] / total[1]).item() if total[1] > 0 else float("nan")}  # fmt: skip
        if on_epoch_end is not None:
            metrics.update(on_epoch_end(state.epoch))
        state.history.append(metrics)
        if bar.disable is False:
            accuracy = metrics.get("accuracy", float("nan"))
            bar.set_postfix(accuracy=f"{accuracy:.4f}", loss=f"{metrics['train_loss']:.4f}")
        if with_tracking:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            accelerator.log(scalars, step=state.completed_steps)
        state.epoch += 1
        state.batches_in_epoch, state.loss_count = 0, 0
        loss_sum.zero_()
        state.loss_sum = 0.0
        if checkpointing_steps == "epoch" and on_checkpoint is not None:
            on_checkpoint(f"epoch_{state.epoch - 1}")
    bar.close()
    return state


def _timed_pause(state: FitState, start: float, action: Callable[[], None]) -> None:
    """Run ``action`` (a checkpoint) outside the measured training time."""
    elapsed = time.perf_counter() - start
    state.session_train_time += elapsed
    state.train_time += elapsed
    action()


def evaluate_model(
    accelerator, model, loader, metric, *, top_k: int = 5, id_log=None, epoch: int = 0
) -> dict[str, Any]:
    """Accuracy (and top-k) and mean loss over the whole evaluation split, every example counted once across
    processes (``accelerator.gather_for_metrics`` drops the duplicates that even batches add)."""
    model.eval()
    loss_sum, count, ids_seen = 0.0, 0, []
    with torch.no_grad():
        for batch in loader:
            logits = model(batch["pixel_values"]).float()
            losses = F.cross_entropy(logits, batch["labels"], reduction="none")
            ranked = logits.topk(min(top_k, logits.shape[-1]), dim=-1).indices
            gathered = accelerator.gather_for_metrics((ranked, batch["labels"], losses, batch["ids"]))
            ranked, labels, losses, ids = gathered
            metric.add_batch(predictions=ranked.tolist(), references=labels.tolist())
            loss_sum += losses.sum().item()
            count += labels.shape[0]
            if id_log is not None:
                ids_seen += ids.tolist()
    result = metric.compute(top_k=top_k)
    if id_log is not None:
        id_log.write(json.dumps({"eval_epoch": epoch, "ids": ids_seen}) + "\n")
        id_log.flush()
    return {
        "accuracy": result["accuracy"],
        "top5_accuracy": result.get("top5_accuracy"),
        "eval_loss": loss_sum / count if count else float("nan"),
        "num_eval_examples": result["num_examples"],
    }

