"""The Accelerate training loop of a transfer run: :func:`training_loop`, its state (:class:`LoopState`), the
checkpoint it saves, and the evaluation (:func:`evaluate_model` with :func:`load_accuracy_metric`). :mod:`.run`
wires it to a configuration; ``benchmarks/train_loop.py`` times it against a plain PyTorch loop.

Resuming: a checkpoint is ``accelerator.save_state`` plus ``masterkey_state.json`` (epoch, batches consumed in that
epoch, completed optimizer steps, history, configuration). Shuffling uses Accelerate's seedable sampler (the order of
epoch ``e`` depends only on ``seed`` and ``e``), and a resumed epoch skips the batches already consumed with
``accelerator.skip_first_batches``, so a resumed run sees exactly the batches the uninterrupted run would have seen.
A checkpoint is written to ``<name>.tmp`` and renamed when complete: killing a run mid-save leaves no half
checkpoint for ``latest`` to pick up. The training augmentation draws its randomness from (seed, epoch, sample) only
(:class:`~.data.ImageClassificationDataset` is told the epoch here), so a resumed run on CPU computes bitwise the
weights of the run it replaces, whatever the number of DataLoader workers.

Divergence: a non-finite loss stops the run before it reaches the weights, with a :class:`TrainingConfigError` naming
the step and epoch; the weights are checked before every checkpoint and evaluation, so no checkpoint, model file or
``results.json`` ever holds non-finite numbers, and the last checkpoint written stays the last good one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import evaluate
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import MasterKeyError, TrainingConfigError
from ._cpu_memory import reuse_freed_memory
from ._denormals import flush_denormals
from ._depthwise_backward import transposed_depthwise_backward
from .outputs import STATE_NAME, prune_checkpoints, write_json

__all__ = [
    "training_loop",
    "LoopState",
    "save_checkpoint",
    "evaluate_model",
    "ACCURACY_METRIC_PATH",
    "load_accuracy_metric",
]

logger = logging.getLogger(__name__)

#: The ``evaluate`` metric module shipped with masterkey (loaded by path: nothing is fetched from the Hub).
ACCURACY_METRIC_PATH = Path(__file__).resolve().parent.parent / "metrics" / "accuracy" / "accuracy.py"


def load_accuracy_metric() -> evaluate.EvaluationModule:
    """``evaluate.load`` of :data:`ACCURACY_METRIC_PATH`, kept in memory (no cache files, safe in every process).

    Example:
        >>> load_accuracy_metric().compute(predictions=[1, 2], references=[1, 1])
        {'accuracy': 0.5, 'num_examples': 2}
    """
    return evaluate.load(str(ACCURACY_METRIC_PATH), keep_in_memory=True)


# -- the loop --------------------------------------------------------------------------------------------------------
@dataclass
class LoopState:
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
    first_step_time: float | None = None  # the session's first optimizer step, data included (compiling, if any)
    last_checkpoint: str | None = None  # the last checkpoint written (or resumed from), named when training diverges

    def to_dict(self, identity: dict[str, Any]) -> dict[str, Any]:
        keys = ("epoch", "batches_in_epoch", "completed_steps", "loss_sum", "loss_count", "history", "train_time",
                "samples_total", "max_steps", "num_epochs")  # fmt: skip
        return {"identity": identity, **{k: getattr(self, k) for k in keys}}

    def restore(self, saved: dict[str, Any]) -> None:
        for key in ("epoch", "batches_in_epoch", "completed_steps", "loss_sum", "loss_count", "history",
                    "train_time", "samples_total"):  # fmt: skip
            setattr(self, key, saved[key])
        self.resumed_step = self.completed_steps


def save_checkpoint(accelerator, folder: Path, state: dict[str, Any], *, total_limit: int | None = None) -> None:
    """``accelerator.save_state`` into ``<folder>.tmp``, then the state file, then a rename: complete or absent.
    With ``total_limit``, the oldest complete checkpoints beside it beyond that many are deleted afterwards
    (:func:`~.outputs.prune_checkpoints`; never this one).

    Example:
        >>> save_checkpoint(accelerator, output_dir / "checkpoints" / "step_40", state.to_dict(identity), total_limit=2)
    """
    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    hook = accelerator.register_save_state_pre_hook(_contiguous_weights)
    try:
        accelerator.save_state(str(tmp))
    finally:
        hook.remove()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_NAME, state)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        if total_limit is not None:
            prune_checkpoints(folder.parent, total_limit=total_limit, keep=folder)
    accelerator.wait_for_everyone()


def _contiguous_weights(models, weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
    """``save_state``'s hook: a model trained in channels_last saves its weights in the ordinary contiguous layout
    (safetensors refuses any other; loading copies them back into the model's own layout)."""
    for state_dict in weights:
        for key, value in state_dict.items():
            if isinstance(value, torch.Tensor) and not value.is_contiguous():
                state_dict[key] = value.contiguous()


def _pixels(batch: dict[str, Any], channels_last: bool) -> torch.Tensor:
    """The batch's images, in the channels_last layout when the model trains in it (a copy of one batch: cheap next
    to the step, and it spares the first convolution a conversion)."""
    pixels = batch["pixel_values"]
    return pixels.contiguous(memory_format=torch.channels_last) if channels_last and pixels.dim() == 4 else pixels


def training_loop(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    train_loader,
    state: LoopState,
    *,
    on_epoch_end: Callable[[int], dict[str, Any]] | None = None,
    checkpointing_steps: int | str | None = None,
    on_checkpoint: Callable[[str], None] | None = None,
    log_sample_ids: bool = False,
    id_log=None,
    with_tracking: bool = False,
    progress: bool = True,
    channels_last: bool = False,
    transposed_depthwise: bool = False,
    reuse_memory: bool = False,
    flush_denormal: bool = False,
) -> LoopState:
    """Train ``model`` (prepared by ``accelerator``) for ``state.max_steps`` optimizer steps, starting where
    ``state`` says (mid-epoch included), calling ``on_epoch_end(epoch)`` for metrics after each epoch and
    ``on_checkpoint(name)`` every ``checkpointing_steps`` steps (or after each epoch for ``"epoch"``).

    Batches are dicts with ``pixel_values`` and ``labels`` (and ``ids`` when ``log_sample_ids``). Besides the loss
    it measures the time spent waiting for data (``state.data_time``) against the whole loop
    (``state.session_train_time``), and the session's first optimizer step on its own (``state.first_step_time``:
    with ``torch.compile``, the compiling). The training dataset is told each epoch (its ``set_epoch``, when it has
    one), so that its augmentation depends on the epoch and not on where a run was resumed. With ``channels_last``
    the images are handed to the model in that layout (the model converted by the caller:
    ``model.to(memory_format=torch.channels_last)``). With ``transposed_depthwise`` the forward runs within
    :func:`~._depthwise_backward.transposed_depthwise_backward` (frozen 7x7 depthwise convs' faster backward). With
    ``reuse_memory`` the loop, evaluations included, runs within :func:`~._cpu_memory.reuse_freed_memory` (on CPU:
    freed memory kept for the next step instead of faulted in anew); with ``flush_denormal`` within
    :func:`~._denormals.flush_denormals` (denormal floats flushed to zero).

    Raises:
        TrainingConfigError: the loss became NaN or infinite (checked before it reaches the weights), or the weights
            did (checked before each checkpoint and evaluation); the message names the step and epoch, the last
            checkpoint (``state.last_checkpoint``) is left as it was and nothing non-finite is saved.

    Example:
        >>> model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        >>> state = training_loop(accelerator, model, optimizer, scheduler, loader, LoopState(max_steps=100,
        ...                       num_epochs=2), on_epoch_end=lambda epoch: {"accuracy": evaluate(epoch)})
        >>> state.history[-1]["train_loss"]
    """
    bar = tqdm(total=state.max_steps, initial=state.completed_steps, desc="training", dynamic_ncols=True,
               disable=not (progress and accelerator.is_local_main_process))  # fmt: skip
    n_proc = accelerator.num_processes
    loss_sum = torch.tensor(state.loss_sum, device=accelerator.device)
    step_start = None  # when the session's first optimizer step began
    memory = contextlib.ExitStack()
    try:
        memory.enter_context(reuse_freed_memory(reuse_memory))
        memory.enter_context(flush_denormals(flush_denormal))
        # an epoch interrupted at its last step (checkpoint, then kill) still needs its evaluation
        while state.epoch < state.num_epochs and (state.completed_steps < state.max_steps or state.batches_in_epoch):
            model.train()
            train_loader.set_epoch(state.epoch)
            # Accelerate gives the epoch to the sampler only (it skips a dataset's set_epoch when the sampler has one)
            dataset = getattr(train_loader, "dataset", None)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(state.epoch)
            loader = train_loader
            if state.batches_in_epoch:
                loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
            start = time.perf_counter()
            iterator = _batches(loader)
            while state.completed_steps < state.max_steps:
                t0 = time.perf_counter()
                if step_start is None:
                    step_start = t0
                batch = next(iterator, None)
                if batch is None:
                    break
                state.data_time += time.perf_counter() - t0
                with accelerator.accumulate(model):
                    with transposed_depthwise_backward(transposed_depthwise):
                        logits = model(_pixels(batch, channels_last))
                    loss = F.cross_entropy(logits, batch["labels"])
                    _check_finite_loss(accelerator, loss, optimizer, state)  # before backward: the weights stay good
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
                    if state.first_step_time is None:
                        state.first_step_time = time.perf_counter() - step_start
                    every = checkpointing_steps if isinstance(checkpointing_steps, int) and on_checkpoint else 0
                    if every and state.completed_steps % every == 0:
                        _check_finite_weights(model, state)
                        state.loss_sum = loss_sum.item()
                        _timed_pause(state, start, lambda: on_checkpoint(f"step_{state.completed_steps}"))
                        start = time.perf_counter()
            elapsed = time.perf_counter() - start
            state.session_train_time += elapsed
            state.train_time += elapsed

            _check_finite_weights(model, state)  # before evaluating them (and saving them, after the last epoch)
            count = torch.tensor(float(state.loss_count), device=loss_sum.device)
            total = accelerator.reduce(torch.stack([loss_sum, count]), "sum")
            metrics = {"epoch": state.epoch, "step": state.completed_steps,
                       "train_loss": (total[0] / total[1]).item() if total[1] > 0 else float("nan")}  # fmt: skip
            if on_epoch_end is not None:
                metrics.update(on_epoch_end(state.epoch))
            _check_finite_metrics(metrics, state)
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
    finally:  # also when a check stops the run
        bar.close()
        memory.close()
    return state


def _diverged(what: str, state: LoopState, *, step: int, learning_rate: float | None = None) -> TrainingConfigError:
    """The error of a run that trained to NaN or infinity: where, what was kept, what to try."""
    lr = "" if learning_rate is None else f", learning rate {learning_rate:.3g}"
    kept = (
        f"The last checkpoint, {state.last_checkpoint}, holds the weights from before and is kept; nothing else was "
        "saved."
        if state.last_checkpoint
        else "No checkpoint was written and no model or results were saved."
    )
    return TrainingConfigError(
        f"Training diverged: {what} at step {step} of {state.max_steps} (epoch {state.epoch}{lr}). {kept} Lower "
        "--learning_rate (or add --num_warmup_steps) and check the data for broken images or labels; a run with "
        "another learning rate starts anew (another --output_dir)."
    )


def _check_finite_loss(accelerator, loss: torch.Tensor, optimizer, state: LoopState) -> None:
    """Stop on a NaN or infinite loss, on every process at once (the flag is summed across processes, so that none
    waits in a collective for one that stopped)."""
    bad = (~torch.isfinite(loss.detach())).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.item():
        learning_rate = optimizer.param_groups[0]["lr"] if optimizer.param_groups else None
        raise _diverged(f"the loss became {loss.item()}", state, step=state.completed_steps + 1,
                        learning_rate=learning_rate)  # fmt: skip


def _check_finite_weights(model: torch.nn.Module, state: LoopState) -> None:
    """Stop before saving or evaluating weights that hold NaN or infinity (a finite loss can still give infinite
    gradients and updates). The weights are the same on every process, so every process stops here together."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    bad = int(torch.stack([~torch.isfinite(t).all() for t in tensors]).sum()) if tensors else 0  # one device sync
    if bad:
        raise _diverged(f"{bad} of {len(tensors)} weight tensors became non-finite", state, step=state.completed_steps)


def _check_finite_metrics(metrics: dict[str, Any], state: LoopState) -> None:
    """Stop before a NaN or infinite loss goes into the history (and ``results.json``)."""
    for key in ("train_loss", "eval_loss"):
        value = metrics.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise _diverged(f"the {key.replace('_', ' ')} is {value}", state, step=state.completed_steps)


def _without_worker_traceback(error: MasterKeyError) -> MasterKeyError:
    """A masterkey error raised in a DataLoader worker comes back with the worker's traceback in its message
    (``Caught DatasetError in DataLoader worker process 0. Original Traceback ...``): keep its own last line."""
    text = str(error)
    if "Original Traceback" not in text:
        return error
    last = text.strip().splitlines()[-1]
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    return type(error)(last[len(prefix) :] if last.startswith(prefix) else last)


def _timed_pause(state: LoopState, start: float, action: Callable[[], None]) -> None:
    """Run ``action`` (a checkpoint) outside the measured training time."""
    elapsed = time.perf_counter() - start
    state.session_train_time += elapsed
    state.train_time += elapsed
    action()


def _batches(loader):
    """``loader``'s batches, masterkey errors from its workers without the worker traceback."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except MasterKeyError as e:
            raise _without_worker_traceback(e) from None
        yield batch


def evaluate_model(
    accelerator, model, loader, metric, *, top_k: int = 5, id_log=None, epoch: int = 0, channels_last: bool = False
) -> dict[str, Any]:
    """Accuracy (and top-k) and mean loss over the whole evaluation split, every example counted once across
    processes (``accelerator.gather_for_metrics`` drops the duplicates that even batches add); with
    ``channels_last``, the images go to the model in that layout.

    Example:
        >>> evaluate_model(accelerator, model, eval_loader, load_accuracy_metric(), top_k=5)["accuracy"]
    """
    model.eval()
    loss_sum, count, ids_seen = 0.0, 0, []
    with torch.no_grad():
        for batch in _batches(loader):
            logits = model(_pixels(batch, channels_last)).float()
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

