"""Every timm family with depthwise convs: the smallest registered variant of each, picked from timm's registry,
extracts, takes its own bank back (exactly and by depth) and still computes finite outputs."""

import pytest
import timm
import torch

import masterkey
from families import FAMILIES, smallest_variant  # benchmarks/families.py: conftest puts benchmarks/ on the path
from masterkey.extract import prepare_model
from masterkey.mapping import match_by_depth, match_by_stage, match_exact

# The families the project promises (issue: "Any timm DS-CNN"); FAMILIES may hold more.
REQUIRED = {
    "ConvNeXt", "ConvNeXt-V2", "EfficientNet", "EfficientNet-Lite", "TF-EfficientNet", "TF-EfficientNet-Lite",
    "MobileNetV2", "MobileNetV3", "MobileNetV4", "MixNet", "GhostNet", "RepViT", "FastViT", "EdgeNeXt", "InceptionNeXt",
}  # fmt: skip


def test_required_families_are_walked():
    assert REQUIRED <= {f.name for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_family_extracts_and_injects(family):
    name = smallest_variant(family)
    assert name in family.members()
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False, num_classes=10)
    bank = masterkey.extract_filters(source, reparameterize=family.reparameterize)
    assert bank.config["source_model"] == name and len(bank) >= 5

    model = masterkey.from_pretrained_filters(name, bank, reparameterize=family.reparameterize, num_classes=10)
    report = model.masterkey_report
    assert len(report.injected) == len(report.entries) == len(bank) and not report.unused
    convs = masterkey.find_depthwise_convs(model, feature_strides=True)
    for conv in convs:
        assert torch.equal(conv.module.weight, bank[conv.name]) and not conv.module.weight.requires_grad
    # between two copies of one architecture the depth mapping is the identity, and so is the name-based one
    assert match_by_depth(bank, convs) == match_exact(bank, convs) == match_by_stage(bank, convs)

    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.reparameterize], ids=lambda f: f.name)
def test_reparameterizable_family_needs_fusing(family):
    with pytest.raises(masterkey.errors.UnsupportedModelError, match="reparameterize"):
        masterkey.extract_filters(prepare_model(smallest_variant(family), reparameterize=False), reparameterize=False)
