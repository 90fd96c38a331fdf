"""Compatibility matrix: banks of five families injected by depth into eleven families (the five among them, so
every source is also a target), every target conv filled with the fitted kernel, forward passes finite."""

import pytest
import timm
import torch

import masterkey
from families import FAMILIES, smallest_variant  # benchmarks/families.py: conftest puts benchmarks/ on the path
from masterkey.errors import IncompatibleBankError
from masterkey.extract import prepare_model
from masterkey.mapping import fit_kernel, kernel_orientation

FAMILY = {f.name: f for f in FAMILIES}
SOURCES = ("ConvNeXt", "MobileNetV3", "MixNet", "InceptionNeXt", "FastViT")
TARGETS = SOURCES + ("EfficientNet-Lite", "MobileNetV4", "GhostNetV2", "RepViT", "EdgeNeXt", "MobileNetV2")
# same-architecture pairs are test_families' job
PAIRS = [(source, target) for source in SOURCES for target in TARGETS if source != target]


def _orientations(sizes):
    return {kernel_orientation(size) for size in sizes}


@pytest.fixture(scope="module")
def banks():
    torch.manual_seed(0)
    return {
        name: masterkey.extract_filters(
            timm.create_model(smallest_variant(FAMILY[name])), reparameterize=FAMILY[name].reparameterize
        )
        for name in SOURCES
    }


@pytest.fixture(scope="module")
def targets():
    # one model per target family, injected again for every source (injection overwrites every kernel it fills)
    return {
        name: prepare_model(smallest_variant(FAMILY[name]), reparameterize=FAMILY[name].reparameterize, num_classes=5)
        for name in TARGETS
    }


def test_matrix_covers_enough_families():
    assert len(SOURCES) >= 4 and len(TARGETS) >= 8 and set(SOURCES) <= set(TARGETS)


@pytest.mark.parametrize("source_name, target_name", PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_bank_fills_every_target_conv(source_name, target_name, banks, targets):
    bank, model = banks[source_name], targets[target_name]
    convs = masterkey.find_depthwise_convs(model)
    needs_bands = not _orientations(c.spec.kernel_size for c in convs) <= _orientations(bank.kernel_sizes)
    if needs_bands:
        # a model with band kernels and a bank without: refused under strict, bands reported untouched otherwise
        with pytest.raises(IncompatibleBankError, match="orientation"):
            masterkey.from_pretrained_filters(model, bank, mapping="depth")
        masterkey.from_pretrained_filters(model, bank, mapping="depth", strict=False)
        skipped = model.masterkey_report.skipped
        assert skipped
        assert all(kernel_orientation(model.get_submodule(e.target).kernel_size) != "square" for e in skipped)
    else:
        masterkey.from_pretrained_filters(model, bank, mapping="depth")
        assert len(model.masterkey_report.injected) == len(convs)

    for entry, conv in zip(model.masterkey_report.entries, convs):
        if entry.injected:
            want = {"out_channels": conv.module.out_channels, "kernel_size": conv.spec.kernel_size}
            expected, _ = fit_kernel(bank[entry.source], **want)
            assert torch.equal(conv.module.weight, expected) and not conv.module.weight.requires_grad
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 5) and torch.isfinite(out).all()
