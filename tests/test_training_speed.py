"""Training speed settings compute the same run: real runs (tiny models, a few steps, offline), no mocks, no timing
assertions (``benchmarks/train_loop.py`` measures the speed).

- channels_last is the default, ``--no_channels_last`` turns it off, and neither it nor ``--torch_compile`` is part of
  the run's identity: both train the same run within floating-point tolerance;
- the model and its inputs are in channels_last in training and in evaluation; the saved model, and the weights in
  every checkpoint, are in the ordinary contiguous layout, and reloading them gives the trained model's outputs;
- the optimizer is torch's fused AdamW where torch has it for the device;
- frozen parameters cost nothing: no gradient, not in the optimizer (no state, no weight decay), never changed;
- ``torch_compile=True`` gives eager's losses within tolerance and records its compile time in ``results.json``;
- frozen depthwise convs of 7x7 and up compute torch's own input (and bias) gradients by transposed convolution, for
  strided, dilated, multiplied and rectangular kernels and under bf16 autocast, and train the same ConvNeXt run;
- memory freed by CPU training steps stays in the process for the next steps (no page faults after the first), is
  returned when training ends, and the run's numbers are exactly those of a run with malloc's defaults.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
import timm
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from masterkey.inject import freeze_depthwise
from masterkey.training import (
    LoopState,
    evaluate_model,
    load_accuracy_metric,
    load_image_dataset,
    parse_args,
    prepare_splits,
    train_transfer,
    training_loop,
)
from masterkey.training._cpu_memory import can_reuse_freed_memory, reuse_freed_memory
from masterkey.training._denormals import can_flush_denormals, flush_denormals
from masterkey.training._depthwise_backward import has_large_frozen_depthwise, transposed_depthwise_backward
from masterkey.training.config import RUN_IDENTITY_KEYS, make_config
from masterkey.training.data import ImageClassificationDataset, timm_transforms
from masterkey.training.run import _optimizer, _optimizer_implementation, _place_model

# 3 steps of 32 images: a few seconds per run on one thread
FAST = dict(model="mobilenetv3_small_050", dataset_name="digits", resolution=32, filters="none", cpu_threads=1,
            dataloader_num_workers=0, max_train_samples=96, max_eval_samples=64, per_device_train_batch_size=32,
            num_train_epochs=1, seed=0)  # fmt: skip


def close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_channels_last_is_on_by_default_and_the_command_line_turns_it_off():
    assert parse_args(["--dataset_name", "digits"]).channels_last is True
    config = parse_args(["--dataset_name", "digits", "--no_channels_last", "--torch_compile"])
    assert config.channels_last is False and config.torch_compile is True
    assert make_config(dataset_name="digits").torch_compile is False
    # they change how fast a run goes, not what it computes (beyond floating-point rounding)
    assert "channels_last" not in RUN_IDENTITY_KEYS and "torch_compile" not in RUN_IDENTITY_KEYS
    with pytest.raises(SystemExit):
        parse_args(["--channels_last"])  # on already: only the switch that turns it off exists


def test_channels_last_trains_the_same_run_and_saves_ordinary_weights(tmp_path):
    runs = {}
    for channels_last in (True, False):
        folder = tmp_path / f"channels_last-{channels_last}"
        train_transfer(output_dir=str(folder), channels_last=channels_last, checkpointing_steps="epoch",
                       **{**FAST, "num_train_epochs": 2})  # fmt: skip
        runs[channels_last] = results(folder)
    fast, plain = runs[True], runs[False]
    assert fast["config"]["channels_last"] is True and plain["config"]["channels_last"] is False
    assert fast["completed_steps"] == plain["completed_steps"] == 6
    for key in ("train_loss", "eval_loss"):  # the same run within floating-point tolerance
        assert close(fast["final"][key], plain["final"][key]), (key, fast["final"][key], plain["final"][key])

    # the saved model and the checkpoint hold contiguous tensors, the same values
    folder = tmp_path / "channels_last-True"
    saved = load_file(str(folder / "model.safetensors"))
    checkpoint = load_file(str(folder / "checkpoints" / "epoch_1" / "model.safetensors"))
    assert all(t.is_contiguous() for t in saved.values()) and all(t.is_contiguous() for t in checkpoint.values())
    assert saved.keys() == checkpoint.keys() and all(torch.equal(saved[k], checkpoint[k]) for k in saved)
    # timm loads it unchanged and computes the run's own evaluation (which ran in channels_last)
    reloaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert all(p.is_contiguous() for p in reloaded.parameters())
    metric = evaluate_model(Accelerator(cpu=True), reloaded, _eval_loader(folder), load_accuracy_metric())
    assert close(metric["eval_loss"], fast["final"]["eval_loss"], 1e-5)
    assert metric["accuracy"] == fast["final"]["accuracy"]

    # and a run resumes from a channels_last checkpoint with channels_last off (not part of its identity): the
    # uninterrupted run's result
    train_transfer(output_dir=str(folder), channels_last=False, overwrite_output_dir=True,
                   resume_from_checkpoint=str(folder / "checkpoints" / "epoch_0"), **{**FAST, "num_train_epochs": 2})
    resumed = results(folder)
    assert resumed["resumed_from"]["step"] == 3 and resumed["completed_steps"] == 6
    assert close(resumed["final"]["eval_loss"], fast["final"]["eval_loss"])


def _eval_loader(folder: Path) -> DataLoader:
    """The run's evaluation split, preprocessed as the run did."""
    run = results(folder)
    splits = prepare_splits(load_image_dataset("digits"), max_train_samples=FAST["max_train_samples"],
                            max_eval_samples=FAST["max_eval_samples"], seed=FAST["seed"])  # fmt: skip
    _, eval_tf, _ = timm_transforms(timm.create_model(FAST["model"]), run["resolution"])
    ds = ImageClassificationDataset(splits.eval, transform=eval_tf, row_ids=splits.eval_rows,
                                    image_column=splits.image_column, label_column=splits.label_column,
                                    label_to_id=splits.label_to_id)  # fmt: skip
    return DataLoader(ds, batch_size=128)


def test_the_loop_feeds_channels_last_inputs_in_training_and_evaluation():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=4)
    model = _place_model(model, torch.device("cpu"), channels_last=True)
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    seen = []
    first_conv = model.conv_stem
    first_conv.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    batches = [{"pixel_values": torch.randn(8, 3, 32, 32), "labels": torch.randint(0, 4, (8,)),
                "ids": torch.arange(8)} for _ in range(2)]  # fmt: skip
    accelerator = Accelerator(cpu=True)
    optimizer = _optimizer(model, make_config(dataset_name="digits"), accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loader = DataLoader(batches, batch_size=None)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = training_loop(accelerator, model, optimizer, scheduler, loader, LoopState(max_steps=2, num_epochs=1),
                          progress=False, channels_last=True)  # fmt: skip
    assert seen == [True, True] and state.first_step_time is not None
    evaluate_model(accelerator, model, loader, load_accuracy_metric(), top_k=1, channels_last=True)
    assert seen == [True] * 4
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)  # trained in that layout


def test_the_optimizer_is_fused_where_torch_has_it():
    assert _optimizer_implementation("cpu") == "fused"  # torch >= 2.4 has a fused AdamW on CPU
    model = timm.create_model("mobilenetv3_small_050", num_classes=4)
    optimizer = _optimizer(model, make_config(dataset_name="digits"), torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    # the fused update is AdamW's: one step matches torch's reference loop within rounding
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(16, 8, 3, 3).contiguous(memory_format=torch.channels_last))
    b = torch.nn.Parameter(a.detach().clone().contiguous())
    fused = torch.optim.AdamW([a], lr=1e-2, weight_decay=0.1, fused=True)
    reference = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(3):
        grad = torch.randn(16, 8, 3, 3)
        a.grad, b.grad = grad.contiguous(memory_format=torch.channels_last), grad.clone()
        fused.step()
        reference.step()
    torch.testing.assert_close(a.detach(), b.detach())


def test_frozen_parameters_get_no_gradient_no_optimizer_state_and_no_weight_decay():
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=4)
    parameters = freeze_depthwise(model)  # the depthwise kernels frozen, everything else trains
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and parameters.trainable < parameters.total
    model = _place_model(model, torch.device("cpu"), channels_last=True)
    optimizer = _optimizer(model, make_config(dataset_name="digits", weight_decay=0.5), torch.device("cpu"))
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    assert not any(id(named[name]) in in_optimizer for name in frozen)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == parameters.trainable

    x, y = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 4, (4,))
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        assert all(named[name].grad is None for name in frozen)  # no gradient buffer, no weight-gradient work
        assert all(p.grad is not None for p in named.values() if p.requires_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # optimizer state for the trainable parameters only: exp_avg and exp_avg_sq, each the parameter's size
    state_numel = sum(t.numel() for s in optimizer.state.values() for k, t in s.items() if k != "step")
    assert state_numel == 2 * parameters.trainable and len(optimizer.state) == len(in_optimizer)
    # weight decay 0.5 never touched them
    assert all(torch.equal(named[name].detach(), value) for name, value in frozen.items())


def test_torch_compile_gives_eager_losses_and_records_its_compile_time(tmp_path):
    """Compiling takes about a minute on 2 CPU cores the first time (inductor caches it on disk afterwards)."""
    runs = {}
    for compiled in (False, True):
        folder = tmp_path / f"compiled-{compiled}"
        train_transfer(output_dir=str(folder), torch_compile=compiled, checkpointing_steps=3, **FAST)
        runs[compiled] = results(folder)
    eager, compiled = runs[False], runs[True]
    assert eager["compile_time_s"] is None and compiled["compile_time_s"] > 0
    assert compiled["config"]["torch_compile"] is True and compiled["completed_steps"] == 3
    for key in ("train_loss", "eval_loss"):  # the mean loss of the 3 steps, and the loss of the weights they made
        assert close(compiled["final"][key], eager["final"][key]), (key, compiled["final"][key], eager["final"][key])
    # the compiled run's files are the eager module's: the same tensor names, no compile wrapper
    saved = load_file(str(tmp_path / "compiled-True" / "model.safetensors"))
    checkpoint = load_file(str(tmp_path / "compiled-True" / "checkpoints" / "step_3" / "model.safetensors"))
    reference = load_file(str(tmp_path / "compiled-False" / "model.safetensors"))
    assert saved.keys() == checkpoint.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(saved[name], value, rtol=1e-3, atol=1e-4)


# -- frozen depthwise convs of 7x7 and up: the input's gradient by transposed convolution

CONV_CASES = [  # (channels, multiplier, kernel, stride, padding, dilation, size, bias, channels_last)
    (8, 1, 7, 1, 3, 1, 9, False, False),
    (8, 1, 7, 1, 3, 1, 9, True, True),
    (6, 1, 7, 2, 3, 1, 11, True, False),  # strided, odd size: the transposed conv pads back to 11
    (6, 1, 7, 2, 3, 1, 10, False, True),
    (4, 2, 7, 1, 3, 1, 8, True, False),  # two outputs per channel
    (4, 1, 9, 1, 8, 2, 8, False, False),  # dilated
    (4, 1, (7, 9), 1, (3, 4), 1, 8, False, False),  # rectangular
    (5, 1, 7, 3, 0, 1, 13, False, False),  # no padding, stride 3
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"c{c[0]}x{c[1]}-k{c[2]}-s{c[3]}-d{c[5]}-n{c[6]}")
def test_transposed_backward_gives_torchs_gradients(case):
    channels, multiplier, kernel, stride, padding, dilation, size, with_bias, channels_last = case
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    torch.manual_seed(0)
    weight = torch.randn(channels * multiplier, 1, *kernel)  # frozen
    bias = torch.randn(channels * multiplier, requires_grad=True) if with_bias else None
    x = torch.randn(3, channels, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grads = {}
    for transposed in (False, True):
        inputs = x.clone().requires_grad_(True)
        with transposed_depthwise_backward(transposed):
            out = torch.nn.functional.conv2d(inputs, weight, bias, stride, padding, dilation, channels)
        # the rerouted call is the one that records our backward; torch's own otherwise
        assert ("FrozenDepthwise" in type(out.grad_fn).__name__) is transposed
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        grads[transposed] = (inputs.grad, None if bias is None else bias.grad.clone())
        if bias is not None:
            bias.grad = None
    assert grads[True][0].shape == x.shape
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-5, atol=1e-5)
    if with_bias:
        torch.testing.assert_close(grads[True][1], grads[False][1], rtol=1e-5, atol=1e-5)


def test_transposed_backward_leaves_other_convs_to_torch_and_works_under_autocast():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    frozen7, frozen3 = torch.randn(4, 1, 7, 7), torch.randn(4, 1, 3, 3)
    trainable7 = torch.randn(4, 1, 7, 7, requires_grad=True)
    dense7 = torch.randn(4, 4, 7, 7)  # not depthwise
    with transposed_depthwise_backward():
        assert "FrozenDepthwise" in type(torch.nn.functional.conv2d(x, frozen7, None, 1, 3, 1, 4).grad_fn).__name__
        for weight, groups in ((frozen3, 4), (trainable7, 4), (dense7, 1)):
            out = torch.nn.functional.conv2d(x, weight, None, 1, weight.shape[-1] // 2, 1, groups)
            assert type(out.grad_fn).__name__ == "ConvolutionBackward0"
        assert type(torch.nn.functional.conv2d(x, frozen7, padding="same", groups=4).grad_fn).__name__ == (
            "ConvolutionBackward0")  # a string padding is left to torch
        with torch.no_grad():
            assert torch.nn.functional.conv2d(x, frozen7, None, 1, 3, 1, 4).grad_fn is None
    # bf16 autocast (Accelerate's --mixed_precision bf16 on CPU): the gradient comes back in the input's dtype
    grads = {}
    for transposed in (False, True):
        inputs = x.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16), transposed_depthwise_backward(transposed):
            out = torch.nn.functional.conv2d(inputs, frozen7, None, 1, 3, 1, 4)
        out.float().sum().backward()
        grads[transposed] = inputs.grad
    assert grads[True].dtype == torch.float32
    torch.testing.assert_close(grads[True], grads[False], rtol=2e-2, atol=2e-2)


def test_only_models_with_frozen_large_depthwise_kernels_take_the_transposed_backward():
    convnext = timm.create_model("convnext_atto", num_classes=3)
    assert not has_large_frozen_depthwise(convnext)  # all trainable
    freeze_depthwise(convnext)
    assert has_large_frozen_depthwise(convnext)
    mobilenet = timm.create_model("mobilenetv3_small_050", num_classes=3)
    freeze_depthwise(mobilenet)
    assert not has_large_frozen_depthwise(mobilenet)  # 3x3 and 5x5: torch's backward is as fast
    assert parse_args(["--dataset_name", "digits"]).transposed_depthwise_backward is True
    config = parse_args(["--dataset_name", "digits", "--no_transposed_depthwise_backward"])
    assert config.transposed_depthwise_backward is False
    assert "transposed_depthwise_backward" not in RUN_IDENTITY_KEYS


def test_transposed_backward_trains_the_same_convnext_run(tmp_path):
    runs = {}
    for transposed in (True, False):
        folder = tmp_path / f"transposed-{transposed}"
        train_transfer(output_dir=str(folder), transposed_depthwise_backward=transposed,
                       **{**FAST, "model": "convnext_atto", "filters": "random"})  # fmt: skip
        runs[transposed] = results(folder)
    fast, plain = runs[True], runs[False]
    assert fast["config"]["transposed_depthwise_backward"] is True  # it applied
    assert plain["config"]["transposed_depthwise_backward"] is False
    assert fast["completed_steps"] == plain["completed_steps"] == 3
    for key in ("train_loss", "eval_loss"):
        assert close(fast["final"][key], plain["final"][key]), (key, fast["final"][key], plain["final"][key])
    # a model without such kernels records that it did not apply
    folder = tmp_path / "mobilenet"
    train_transfer(output_dir=str(folder), **{**FAST, "filters": "random", "max_train_samples": 32})
    assert results(folder)["config"]["transposed_depthwise_backward"] is False


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def _faults_of_steps(steps: int, numel: int) -> int:
    """Minor page faults while allocating, filling and freeing a tensor of ``numel`` floats ``steps`` times, as a
    training step allocates and frees its activations."""
    start = _minor_faults()
    for _ in range(steps):
        torch.ones(numel).sum()
    return _minor_faults() - start


@pytest.mark.skipif(not can_reuse_freed_memory(), reason="mallopt is glibc's (Linux)")
def test_freed_memory_is_reused_within_the_context_and_returned_after_it():
    numel = 64 * 2**20 // 4  # 64 MiB: above any threshold at which glibc serves blocks with fresh pages
    pages = 64 * 2**20 // resource.getpagesize()
    with reuse_freed_memory() as applied:
        assert applied is True
        _faults_of_steps(1, numel)  # the first step brings the memory in
        kept = _faults_of_steps(4, numel)
        with reuse_freed_memory():  # nested: the inner exit leaves the outer context's setting alone
            pass
        assert _faults_of_steps(4, numel) < pages // 10
        big = torch.ones(4 * numel)  # 256 MiB, freed below: it stays in the process while the context lasts
        del big
        resident_inside = _resident_bytes()
    returned = resident_inside - _resident_bytes()
    assert returned > 128 * 2**20, returned  # malloc_trim handed the kept memory back on leaving
    assert kept < pages // 10, (kept, pages)  # each step found its memory already in place
    # afterwards malloc serves blocks as glibc's adapted defaults do: one of 64 MiB with fresh pages each time (a fault
    # per 4 KiB page, 16,384 per step here, or at least one per 2 MiB huge page where those are always on) ...
    assert _faults_of_steps(4, numel) > 64, "the kept memory's setting outlived the context"
    # ... and one of 16 MiB from the heap, kept (with glibc's starting thresholds every step would fault 4,096 pages)
    _faults_of_steps(1, numel // 4)
    assert _faults_of_steps(4, numel // 4) < pages // 40, "work after training faults as if malloc had just started"
    with reuse_freed_memory(False) as applied:
        assert applied is False


def test_reusing_freed_memory_trains_the_same_run_and_is_recorded(tmp_path):
    assert parse_args(["--dataset_name", "digits"]).reuse_freed_memory is True
    assert parse_args(["--dataset_name", "digits", "--no_reuse_freed_memory"]).reuse_freed_memory is False
    assert "reuse_freed_memory" not in RUN_IDENTITY_KEYS
    runs = {}
    for reuse in (True, False):
        folder = tmp_path / f"reuse-{reuse}"
        train_transfer(output_dir=str(folder), reuse_freed_memory=reuse, **FAST)
        runs[reuse] = results(folder)
    assert runs[True]["config"]["reuse_freed_memory"] is can_reuse_freed_memory()  # it applied where it can
    assert runs[False]["config"]["reuse_freed_memory"] is False
    # only where the memory comes from changes, never a number
    for key in ("train_loss", "eval_loss", "accuracy"):
        assert runs[True]["final"][key] == runs[False]["final"][key], key


def _denormal_survives() -> bool:
    """Whether a denormal float (1e-39, below float32's smallest normal 1.18e-38) survives arithmetic as itself."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    return bool((tiny * 1.0).item() != 0.0)


@pytest.mark.skipif(not can_flush_denormals(), reason="flush-to-zero is an x86 (SSE3) mode")
def test_denormals_are_flushed_within_the_context_and_kept_after_it():
    assert _denormal_survives()
    with flush_denormals() as applied:
        assert applied is True and not _denormal_survives()
        with flush_denormals():  # nested: the inner exit leaves the outer context's mode alone
            pass
        assert not _denormal_survives()
    assert _denormal_survives(), "the flush outlived the context"
    with flush_denormals(False) as applied:
        assert applied is False and _denormal_survives()


def test_flushing_denormals_is_on_by_default_recorded_and_left_off_after_the_run(tmp_path):
    assert parse_args(["--dataset_name", "digits"]).flush_denormal is True
    assert parse_args(["--dataset_name", "digits", "--no_flush_denormal"]).flush_denormal is False
    assert "flush_denormal" not in RUN_IDENTITY_KEYS  # the arithmetic's mode, not another run
    runs = {}
    for flush in (True, False):
        folder = tmp_path / f"flush-{flush}"
        train_transfer(output_dir=str(folder), flush_denormal=flush, **FAST)
        runs[flush] = results(folder)
        assert _denormal_survives(), "a run left denormals flushed for the rest of the process"
    assert runs[True]["config"]["flush_denormal"] is can_flush_denormals()  # it applied where it can
    assert runs[False]["config"]["flush_denormal"] is False
    # a run this short makes no denormal that matters: both modes learn the same to float rounding
    for key in ("train_loss", "eval_loss"):
        assert close(runs[True]["final"][key], runs[False]["final"][key], rel=1e-3), key
