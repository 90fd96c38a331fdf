"""The Accelerate training loop of a transfer run: :func:`training_loop`, its state (:class:`LoopState`), the
checkpoint it saves, and the evaluation (:func:`evaluate_model` with :func:`load_accuracy_metric`). :mod:`.run`
wires it to a configuration; ``benchmarks/train_loop.py`` times it against a plain PyTorch loop.

Resuming: a checkpoint is ``accelerator.save_state`` plus ``masterkey_state.json`` (epoch, batches consumed in that
epoch, completed optimizer steps, history, configuration). Shuffling uses Accelerate's seedable sampler (the order of
epoch ``e`` depends only on ``seed`` and ``e``), and a resumed epoch skips the batches already consumed with
``accelerator.skip_first_batches``, so a resumed run sees exactly the batches the uninterrupted run would have seen.
A checkpoint is written to ``<name>.tmp`` and renamed when complete: killing a run mid-save leaves no half
checkpoint for ``latest`` to pick up.
"""

from __future__ import annotations

import json
import logging
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

from .outputs import STATE_NAME, write_json

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
    """``accelerator.save_state`` into ``<folder>.tmp``, then the state file, then a rename: complete or absent.

    Example:
        >>> save_checkpoint(accelerator, output_dir / "checkpoints" / "step_40", state.to_dict(identity))
    """
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
) -> LoopState:
    """Train ``model`` (prepared by ``accelerator``) for ``state.max_steps`` optimizer steps, starting where
    ``state`` says (mid-epoch included), calling ``on_epoch_end(epoch)`` for metrics after each epoch and
    ``on_checkpoint(name)`` every ``checkpointing_steps`` steps (or after each epoch for ``"epoch"``).

    Batches are dicts with ``pixel_values`` and ``labels`` (and ``ids`` when ``log_sample_ids``). Besides the loss
    it measures the time spent waiting for data (``state.data_time``) against the whole loop
    (``state.session_train_time``).

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


def _timed_pause(state: LoopState, start: float, action: Callable[[], None]) -> None:
    """Run ``action`` (a checkpoint) outside the measured training time."""
    elapsed = time.perf_counter() - start
    state.session_train_time += elapsed
    state.train_time += elapsed
    action()


def evaluate_model(
    accelerator, model, loader, metric, *, top_k: int = 5, id_log=None, epoch: int = 0
) -> dict[str, Any]:
    """Accuracy (and top-k) and mean loss over the whole evaluation split, every example counted once across
    processes (``accelerator.gather_for_metrics`` drops the duplicates that even batches add).

    Example:
        >>> evaluate_model(accelerator, model, eval_loader, load_accuracy_metric(), top_k=5)["accuracy"]
    """
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

