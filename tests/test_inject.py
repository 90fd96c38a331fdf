"""Injecting a bank into a model: exact copies, freezing policies, reports and mismatches."""

import pytest
import timm
import torch
from torch import nn

import masterkey
from masterkey.errors import IncompatibleBankError, UnsupportedModelError
from masterkey.inject import TrainableParameters
from masterkey.research.controls import inject_pointwise, pointwise_convs


@pytest.fixture
def bank(tiny_model):
    torch.manual_seed(123)
    source = timm.create_model("convnext_atto")
    return masterkey.extract_filters(source, source_dataset="random-init")


def test_same_architecture_injection_copies_every_kernel_exactly(bank, tiny_model):
    model = masterkey.from_pretrained_filters(tiny_model, bank)
    assert model is tiny_model
    for name in bank.names:
        assert torch.equal(model.get_submodule(name).weight, bank[name])
    report = model.masterkey_report
    assert len(report.injected) == len(bank) and not report.skipped and not report.unused
    assert "Injected 12/12 depthwise convs" in str(report)


def test_model_name_is_created_with_model_kwargs(bank):
    model = masterkey.from_pretrained_filters("convnext_atto", bank, num_classes=7)
    assert model.get_classifier().out_features == 7
    assert torch.isfinite(model(torch.randn(2, 3, 64, 64))).all()


def test_default_policy_freezes_only_the_depthwise_kernels(bank, tiny_model):
    model = masterkey.from_pretrained_filters(tiny_model, bank)
    depthwise = {id(model.get_submodule(n).weight) for n in bank.names}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) not in depthwise), name
    frozen = sum(model.get_submodule(n).weight.numel() for n in bank.names)
    total = sum(p.numel() for p in model.parameters())
    assert model.masterkey_report.parameters == TrainableParameters(total - frozen, total)


def test_a_training_step_leaves_frozen_kernels_unchanged(bank, tiny_model):
    model = masterkey.from_pretrained_filters(tiny_model, bank)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    head_before = model.get_classifier().weight.clone()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    for name in bank.names:
        assert torch.equal(model.get_submodule(name).weight, bank[name])
    assert not torch.equal(model.get_classifier().weight, head_before)


def test_pointwise_and_head_policy(bank, tiny_model):
    model = masterkey.from_pretrained_filters(tiny_model, bank, trainable="pointwise+head")
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            pointwise = isinstance(module, nn.Linear) or (
                isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
            )
            assert p.requires_grad == (pointwise or module is model.get_classifier()), name
    assert not model.stem[0].weight.requires_grad and not model.head.norm.weight.requires_grad


def test_trainable_all_and_no_freeze(bank, tiny_model):
    model = masterkey.from_pretrained_filters(tiny_model, bank, trainable="all")
    assert all(p.requires_grad for p in model.parameters())
    model = masterkey.from_pretrained_filters(timm.create_model("convnext_atto"), bank, freeze=False)
    assert all(p.requires_grad for p in model.parameters())
    assert not model.masterkey_report.frozen
    with pytest.raises(ValueError, match="choose one of"):
        masterkey.from_pretrained_filters(timm.create_model("convnext_atto"), bank, trainable="heads")


def test_peft_style_parameter_line(bank, tiny_model):
    line = str(masterkey.from_pretrained_filters(tiny_model, bank).masterkey_report.parameters)
    trainable, total = masterkey.trainable_parameters(tiny_model)
    assert line == f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    assert line.splitlines()[-1] == str(masterkey.trainable_parameters(tiny_model))


def test_freeze_depthwise_for_your_own_weights(tiny_model):
    counts = masterkey.freeze_depthwise(tiny_model)
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith("conv_dw.weight") for n in frozen)
    assert counts == masterkey.trainable_parameters(tiny_model)
    assert masterkey.freeze_depthwise(tiny_model, trainable="all").trainable == counts.total


def test_other_architecture_is_refused_with_names(bank):
    with pytest.raises(IncompatibleBankError) as info:
        masterkey.from_pretrained_filters("convnext_femto", bank)
    err = info.value
    assert "stages.0.blocks.0.conv_dw" in str(err) and "strict=False" in str(err)
    assert err.mismatched["stages.0.blocks.0.conv_dw"] == ((48, 1, 7, 7), (40, 1, 7, 7))
    with pytest.raises(IncompatibleBankError) as info:
        masterkey.from_pretrained_filters("mobilenetv3_small_050", bank)
    assert "blocks.0.0.conv_dw" in info.value.missing


def test_non_strict_injects_what_matches_and_reports_the_rest(bank):
    partial = masterkey.FilterBank.from_tensors(
        {n: bank[n] for n in bank.names[:3]}, specs=bank.specs[:3], source_model="convnext_atto"
    )
    model = timm.create_model("convnext_atto")
    untouched = model.stages[3].blocks[1].conv_dw.weight.clone()
    masterkey.from_pretrained_filters(model, partial, strict=False)
    report = model.masterkey_report
    assert [e.target for e in report.injected] == bank.names[:3]
    assert {e.reason for e in report.skipped} == {"no bank entry for this conv"}
    assert torch.equal(model.stages[3].blocks[1].conv_dw.weight, untouched)
    assert model.stages[3].blocks[1].conv_dw.weight.requires_grad  # left untouched, so left trainable
    assert "untouched" in report.table()


def test_inject_from_a_local_path(bank, tmp_path):
    bank.save_pretrained(tmp_path / "bank")
    model = masterkey.from_pretrained_filters("convnext_atto", tmp_path / "bank")
    assert torch.equal(model.stages[2].blocks[0].conv_dw.weight, bank["stages.2.blocks.0.conv_dw"])


def test_model_without_depthwise_convs_is_refused(bank):
    with pytest.raises(UnsupportedModelError, match="no depthwise convolution"):
        masterkey.from_pretrained_filters("resnet10t", bank)


def test_unfused_reparameterizable_target_needs_reparameterize():
    source = masterkey.extract_filters("repvit_m1", pretrained=False)
    with pytest.raises(UnsupportedModelError, match="reparameterize"):
        masterkey.from_pretrained_filters("repvit_m1", source)
    model = masterkey.from_pretrained_filters("repvit_m1", source, reparameterize=True)
    assert len(model.masterkey_report.injected) == len(source)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, b: masterkey.from_pretrained_filters(m, b, trainable="all-but-depthwse"), "trainable"),
        (lambda m, b: masterkey.from_pretrained_filters(m, b, resize="geometrc"), "resize"),
        (lambda m, b: masterkey.from_pretrained_filters(m, b, mapping="deep"), "mapping"),
        (lambda m, b: masterkey.freeze_depthwise(m, trainable="pointwise"), "trainable"),
        (lambda m, b: masterkey.inject_universal(m, trainable="none"), "trainable"),
        (lambda m, b: masterkey.inject_universal(m, learn_affine="scale"), "learn_affine"),
        (lambda m, b: inject_pointwise(m, {}, first_depthwise=-1), "first_depthwise"),
    ],
)
def test_every_injector_checks_its_arguments_before_touching_the_model(bank, tiny_model, call, match):
    from masterkey.errors import ArgumentError, MappingError

    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    grads = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    with pytest.raises((ArgumentError, MappingError), match=match):
        call(tiny_model, bank)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert grads == {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    assert not hasattr(tiny_model, "masterkey_report")


def test_the_skeleton_serves_a_custom_injector_and_refuses_before_copying(tiny_model):
    from masterkey.inject import InjectionEntry, InjectionPlan, inject

    stem = tiny_model.stem[0]
    value = torch.full_like(stem.weight, 0.5)

    def plan(model):
        return InjectionPlan([InjectionEntry("stem.0", "mine", True), InjectionEntry("head.fc", None, False, reason="no")],
                             updates=[(model.stem[0].weight, value)])

    before = stem.weight.clone()
    with pytest.raises(IncompatibleBankError, match="head.fc") as error:
        inject(tiny_model, plan=plan, source="my weights", mapping="stem only")
    assert error.value.missing == ["head.fc"] and torch.equal(stem.weight, before)  # nothing copied on refusal
    model = inject(tiny_model, plan=plan, source="my weights", mapping="stem only", strict=False)
    assert torch.equal(stem.weight, value) and not stem.weight.requires_grad
    report = model.masterkey_report
    assert report.bank == "my weights" and [e.target for e in report.injected] == ["stem.0"]
    assert report.parameters == masterkey.trainable_parameters(model)


def test_pointwise_injection_copies_and_freezes_the_first_pointwise_convs(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("mobilenetv3_small_050", num_classes=4)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "model.safetensors")
    target = timm.create_model("mobilenetv3_small_050", num_classes=4)
    n_dw = len(masterkey.find_depthwise_convs(target))
    pointwise = pointwise_convs(target)
    inject_pointwise(target, tmp_path / "model.safetensors", first_depthwise=n_dw // 2)
    count = round((n_dw // 2) / n_dw * len(pointwise))
    assert 0 < count < len(pointwise)
    for i, (name, module) in enumerate(pointwise):
        copied = torch.equal(module.weight, source.get_submodule(name).weight)
        assert copied == (i < count) and module.weight.requires_grad == (i >= count), name
    report = target.masterkey_report
    assert len(report.injected) == count and report.mapping == "pointwise"
    # everything else trains, the depthwise kernels included (the control arm of layer-split)
    assert all(c.module.weight.requires_grad for c in masterkey.find_depthwise_convs(target))


def test_the_pointwise_control_moved_to_the_research_wing_and_its_old_names_warn():
    for old in (lambda: masterkey.inject_pointwise, lambda: masterkey.inject.inject_pointwise):
        with pytest.warns(DeprecationWarning, match="masterkey.research.controls"):
            assert old() is inject_pointwise
    assert "inject_pointwise" not in masterkey.__all__
    # __all__ is written out for linters: every lazy name but the deprecated ones, and the version
    assert masterkey.__all__ == sorted(set(masterkey._LAZY_ATTRS) - set(masterkey._DEPRECATED)) + ["__version__"]


def test_a_dict_of_tensors_or_a_bad_mapping_result_is_a_typed_error(bank, tiny_model):
    from masterkey.errors import ArgumentError, MappingError

    with pytest.raises(ArgumentError, match="FilterBank.from_tensors"):
        masterkey.from_pretrained_filters(tiny_model, dict(bank.items()))
    with pytest.raises(MappingError, match="returned a list"):
        masterkey.from_pretrained_filters(tiny_model, bank, mapping=lambda b, t: [n for n in b.names])


def test_a_model_on_the_meta_device_is_refused_not_reported_as_injected(bank):
    from masterkey.errors import ArgumentError

    with torch.device("meta"):
        model = timm.create_model("convnext_atto")
    with pytest.raises(ArgumentError, match="meta device"):
        masterkey.from_pretrained_filters(model, bank)


def test_exact_mapping_refuses_another_channel_multiplier_with_the_same_weight_shape():
    source = nn.Sequential(nn.Conv2d(32, 32, 3, groups=32))  # multiplier 1
    target = nn.Sequential(nn.Conv2d(16, 32, 3, groups=16))  # multiplier 2: the same (32, 1, 3, 3) weight
    bank = masterkey.extract_filters(source)
    with pytest.raises(IncompatibleBankError, match="multiplier 2") as error:
        masterkey.from_pretrained_filters(target, bank)
    assert list(error.value.mismatched) == ["0"]
    # across architectures (mapping="depth") the kernels are fitted, as for any other shape
    masterkey.from_pretrained_filters(target, bank, mapping="depth")
    assert torch.equal(target[0].weight, bank["0"])


def test_a_second_injection_that_injects_nothing_keeps_earlier_kernels_frozen(bank, tiny_model):
    masterkey.from_pretrained_filters(tiny_model, bank)
    frozen = [n for n, p in tiny_model.named_parameters() if not p.requires_grad]
    assert len(frozen) == len(bank)
    unrelated = masterkey.FilterBank.from_tensors({"elsewhere": torch.randn(4, 1, 3, 3)})
    model = masterkey.from_pretrained_filters(tiny_model, unrelated, strict=False)
    assert not model.masterkey_report.injected
    assert [n for n, p in tiny_model.named_parameters() if not p.requires_grad] == frozen
    masterkey.freeze_depthwise(tiny_model, trainable="all")  # asked for explicitly, everything trains again
    assert all(p.requires_grad for p in tiny_model.parameters())
