"""Cross-architecture mapping: layer matching, channel selection, kernel resizing, the report, and bad input."""

import pytest
import timm
import torch
from torch import nn

import masterkey
from masterkey.errors import IncompatibleBankError, InvalidFiltersError, MappingError, UnsupportedModelError
import math

import torchvision

from masterkey.mapping import fit_kernel, match_by_depth, match_by_stage, resize_kernel, select_channels


@pytest.fixture(scope="module")
def convnext_bank():
    return masterkey.extract_filters(timm.create_model("convnext_atto"))


@pytest.fixture(scope="module")
def mobilenet_bank():
    return masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))


def _flat(kernel):
    return kernel.flatten(1)


# -- kernels ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, target",
    [((3, 3), (7, 7)), ((7, 7), (3, 3)), ((3, 3), (4, 4)), ((5, 5), (3, 3)), ((1, 9), (1, 11)), ((9, 1), (5, 1))],
)
def test_resize_keeps_sum_and_norm(source, target):
    kernel = torch.randn(32, 1, *source, generator=torch.Generator().manual_seed(0))
    resized = resize_kernel(kernel, target)
    assert resized.shape == (32, 1, *target)
    torch.testing.assert_close(_flat(resized).sum(1), _flat(kernel).sum(1), atol=1e-4, rtol=1e-4)
    # the norm is kept unless the filter's sum alone needs more of it on fewer taps
    reachable = _flat(kernel).norm(dim=1) ** 2 >= _flat(kernel).sum(1) ** 2 / (target[0] * target[1])
    torch.testing.assert_close(_flat(resized).norm(dim=1)[reachable], _flat(kernel).norm(dim=1)[reachable])


def test_zero_pad_leaves_the_filter_unchanged():
    kernel = torch.randn(4, 1, 3, 3)
    padded = resize_kernel(kernel, (7, 7))
    assert torch.equal(padded[..., 2:5, 2:5], kernel)
    assert padded[..., :2, :].abs().sum() == 0 and padded[..., :, 5:].abs().sum() == 0


def test_crop_keeps_the_centre_shape_and_a_cropped_box_stays_flat():
    kernel = torch.randn(4, 1, 7, 7)
    cropped = resize_kernel(kernel, (3, 3))
    centre = kernel[..., 2:5, 2:5]
    # the centre, shifted and scaled per filter: perfectly correlated with what was kept
    corr = torch.nn.functional.cosine_similarity(
        _flat(cropped - cropped.mean((-2, -1), keepdim=True)), _flat(centre - centre.mean((-2, -1), keepdim=True))
    )
    torch.testing.assert_close(corr, torch.ones(4))
    box = torch.full((1, 1, 5, 5), 1 / 25)
    torch.testing.assert_close(resize_kernel(box, (3, 3)), torch.full((1, 1, 3, 3), 1 / 9))


def test_select_channels_is_evenly_spaced_and_deterministic():
    assert select_channels(8, 4).tolist() == [0, 2, 4, 6]
    assert select_channels(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert select_channels(5, 5).tolist() == list(range(5))
    chosen = select_channels(1152, 320)
    assert len(set(chosen.tolist())) == 320 and chosen[-1] < 1152


def test_fit_kernel_lists_its_transforms():
    kernel = torch.randn(40, 1, 7, 7)
    fitted, transforms = fit_kernel(kernel, out_channels=24, kernel_size=(3, 3))
    assert fitted.shape == (24, 1, 3, 3)
    assert transforms == ["channels 40->24 evenly spaced", "kernel 7x7->3x3 centre-crop"]
    same, none = fit_kernel(kernel, out_channels=40, kernel_size=(7, 7))
    assert none == [] and torch.equal(same, kernel)


# -- layers ----------------------------------------------------------------------------------------------------------
def _targets(model):
    return masterkey.find_depthwise_convs(model, feature_strides=True)


def test_banks_record_the_feature_scale_each_filter_reads(convnext_bank, mobilenet_bank):
    # ConvNeXt's 4x4 stem and 2x2 downsampling convs set its scales; MobileNetV3's strided depthwise convs set its own
    assert [s.feature_stride for s in convnext_bank.specs] == [4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32]
    assert [s.feature_stride for s in mobilenet_bank.specs] == [2, 4, 8, 8, 16, 16, 16, 16, 16, 32, 32]
    assert masterkey.FilterBank.from_tensors(dict(convnext_bank.items())).specs[0].feature_stride is None


def test_feature_strides_are_derived_where_the_forward_cannot_run():
    class NeedsTwoInputs(nn.Module):  # a forward masterkey cannot call with one blank image
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2)
            self.shortcut = nn.Conv2d(8, 8, 1, stride=2)  # a strided 1x1 shortcut does not move the main path
            self.dw = nn.Conv2d(8, 8, 3, groups=8, stride=2)
            self.pool = nn.MaxPool2d(2)
            self.dw2 = nn.Conv2d(8, 8, 5, groups=8)

        def forward(self, x, mask):
            return self.dw2(self.pool(self.dw(self.stem(x)))) * mask

    strides = [c.spec.feature_stride for c in _targets(NeedsTwoInputs())]
    assert strides == [2, 8]


def test_depth_mapping_is_the_identity_between_libraries_both_ways():
    # torchvision's flat features.N and timm's blocks.S.B name the same MobileNetV2 differently
    torchvision_model, timm_model = torchvision.models.mobilenet_v2(), timm.create_model("mobilenetv2_100")
    for source, target in ((torchvision_model, timm_model), (timm_model, torchvision_model)):
        bank = masterkey.extract_filters(source)
        masterkey.from_pretrained_filters(target, bank, mapping="depth")
        report = target.masterkey_report
        assert [e.source for e in report.entries] == bank.names and not report.unused
        assert all(e.injected and e.transforms == ["copied"] for e in report.entries)  # every target as it is
        for entry, conv in zip(report.entries, masterkey.find_depthwise_convs(target)):
            assert torch.equal(conv.module.weight, bank[entry.source])
    # the name-based rule misaligns them: the reason the depth rule aligns by structure
    stage_plan = match_by_stage(masterkey.extract_filters(torchvision_model), _targets(timm_model))
    assert list(stage_plan.values()) != masterkey.extract_filters(torchvision_model).names


def test_depth_mapping_takes_the_same_size_then_the_nearest_scale_then_position(convnext_bank):
    lite0 = masterkey.load_master_filters("imagenet-lite0")  # 3x3 and 5x5 at scales 2 to 32
    for model in ("mobilenetv3_large_100", "convnext_atto"):
        targets = _targets(timm.create_model(model))
        plan = match_by_depth(lite0, targets)
        for t in targets:
            chosen = lite0.spec(plan[t.name])
            same_size = [s for s in lite0.specs if s.kernel_size == t.spec.kernel_size]
            pool = same_size or lite0.specs  # resized only where the bank has none of the target's size
            if same_size:
                assert chosen.kernel_size == t.spec.kernel_size
            gap = abs(math.log2(chosen.feature_stride) - math.log2(t.spec.feature_stride))
            assert gap == min(abs(math.log2(s.feature_stride) - math.log2(t.spec.feature_stride)) for s in pool)
    # 7x7 ConvNeXt targets from a bank without 7x7: ordered by scale, and every scale ConvNeXt has is met exactly
    targets = _targets(timm.create_model("convnext_atto"))
    plan = match_by_depth(lite0, targets)
    sources = [lite0.spec(plan[t.name]) for t in targets]
    assert [s.index for s in sources] == sorted(s.index for s in sources)
    assert [s.feature_stride for s in sources] == [t.spec.feature_stride for t in targets]


def test_depth_mapping_falls_back_to_stages_for_banks_without_feature_strides(convnext_bank, caplog):
    old = masterkey.FilterBank.from_tensors(dict(convnext_bank.items()))  # no feature strides, as banks of 0.1 had
    targets = _targets(timm.create_model("mobilenetv3_small_050"))
    assert match_by_depth(old, targets) == match_by_stage(old, targets)
    assert "records no feature strides" in caplog.text
    with pytest.raises(MappingError, match="feature_strides=True"):
        match_by_depth(convnext_bank, masterkey.find_depthwise_convs(timm.create_model("mobilenetv3_small_050")))


def test_stage_mapping_follows_depth_and_uses_every_stage(convnext_bank, mobilenet_bank):
    targets = masterkey.find_depthwise_convs(timm.create_model("mobilenetv3_small_050"))
    plan = match_by_stage(convnext_bank, targets)
    sources = [convnext_bank.spec(plan[t.name]).index for t in targets]
    assert sources == sorted(sources), "deeper targets must take deeper (or equal) sources"
    assert sources[0] == 0 and sources[-1] == len(convnext_bank) - 1
    assert {convnext_bank.spec(s).stage for s in plan.values()} == {0, 1, 2, 3}
    # and back: every mobilenet entry depth-matched into convnext keeps the order too
    back = match_by_stage(mobilenet_bank, masterkey.find_depthwise_convs(timm.create_model("convnext_atto")))
    back_indices = [mobilenet_bank.spec(s).index for s in back.values()]
    assert back_indices == sorted(back_indices)


def test_mixnet_splits_take_the_closest_kernel_size(convnext_bank):
    bank = masterkey.extract_filters(timm.create_model("mixnet_s"))
    model = masterkey.from_pretrained_filters("convnext_atto", bank, mapping="depth")
    for entry in model.masterkey_report.entries:
        layer, _, split = entry.source.rpartition(".")
        if split.isdigit():  # a MixedConv2d split: no sibling split is closer to 7x7
            siblings = [s.kernel_size[0] for s in bank.specs if s.name.rpartition(".")[0] == layer]
            assert abs(bank.spec(entry.source).kernel_size[0] - 7) == min(abs(k - 7) for k in siblings)
    assert (7, 7) in {bank.spec(e.source).kernel_size for e in model.masterkey_report.entries}
    # the other way: each split is its own target, all filled
    mixnet = masterkey.from_pretrained_filters("mixnet_s", convnext_bank, mapping="depth")
    splits = [e for e in mixnet.masterkey_report.entries if e.target.endswith(".conv_dw.3")]
    assert splits and all(e.injected and "kernel 7x7->9x9 zero-pad" in e.transforms for e in splits)


def test_cross_injection_writes_the_fitted_kernels(mobilenet_bank):
    model = masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping="depth")
    report = model.masterkey_report
    assert len(report.injected) == len(report.entries)
    for entry, conv in zip(report.entries, masterkey.find_depthwise_convs(model)):
        expected, transforms = fit_kernel(
            mobilenet_bank[entry.source], out_channels=conv.module.out_channels, kernel_size=conv.spec.kernel_size
        )
        assert entry.transforms == transforms
        assert torch.equal(conv.module.weight, expected) and not conv.module.weight.requires_grad
    assert "kernel 3x3->7x7 zero-pad" in report.table()


def test_channel_multiplier_target(mobilenet_bank):
    # a depthwise conv with multiplier 2 (out = 2 * in): output channels are selected like any others
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 5, padding=2, groups=8), nn.Conv2d(16, 4, 1))
    masterkey.from_pretrained_filters(model, mobilenet_bank, mapping="depth")
    entry = model.masterkey_report.entries[0]
    assert entry.injected and entry.transforms[0].endswith("->16 evenly spaced")
    assert torch.isfinite(model(torch.randn(1, 3, 16, 16))).all()


# -- bands, strictness and bad input ---------------------------------------------------------------------------------
def test_bands_are_left_untouched_with_a_reason_and_strict_refuses(convnext_bank):
    model = masterkey.from_pretrained_filters("inception_next_atto", convnext_bank, mapping="depth", strict=False)
    report = model.masterkey_report
    untouched = report.skipped
    assert untouched and all(e.source is None and "orientation" in e.reason for e in untouched)
    assert {e.target.rsplit(".", 1)[-1] for e in untouched} == {"dwconv_w", "dwconv_h"}
    assert all(e.injected for e in report.entries if e not in untouched)
    assert "untouched" in report.table()
    with pytest.raises(IncompatibleBankError, match="orientation") as info:
        masterkey.from_pretrained_filters("inception_next_atto", convnext_bank, mapping="depth")
    assert set(info.value.missing) == {e.target for e in untouched}


def test_bands_map_onto_bands():
    bank = masterkey.extract_filters(timm.create_model("inception_next_atto"))
    model = masterkey.from_pretrained_filters("ghostnetv2_100", bank, mapping="depth")
    report = model.masterkey_report
    assert len(report.injected) == len(report.entries)
    for entry in report.entries:
        target = model.get_submodule(entry.target)
        source_h, source_w = bank.spec(entry.source).kernel_size
        target_h, target_w = target.kernel_size
        assert (source_h < source_w) == (target_h < target_w) and (source_h > source_w) == (target_h > target_w)


def test_exact_mapping_still_refuses_other_architectures(mobilenet_bank):
    with pytest.raises(IncompatibleBankError, match="mapping='depth'"):
        masterkey.from_pretrained_filters("mobilenetv3_small_100", mobilenet_bank)


def test_callable_returning_unknown_names_raises(mobilenet_bank):
    def to_nowhere(bank, targets):
        return {t.name: "stages.9.not_a_conv" for t in targets}

    with pytest.raises(MappingError, match="stages.9.not_a_conv"):
        masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping=to_nowhere)

    def unknown_target(bank, targets):
        return {"head.fc": bank.names[0]}

    with pytest.raises(MappingError, match="head.fc"):
        masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping=unknown_target)

    with pytest.raises(MappingError, match="exact, depth"):
        masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping="nearest")


def test_callable_mapping_is_fitted_and_reported(mobilenet_bank):
    def everything_from_the_last(bank, targets):
        return {t.name: bank.names[-1] for t in targets}

    model = masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping=everything_from_the_last)
    report = model.masterkey_report
    assert report.mapping == "everything_from_the_last"
    assert {e.source for e in report.entries} == {mobilenet_bank.names[-1]}
    assert all(e.injected for e in report.entries)


def test_nan_and_inf_banks_are_refused_with_their_names():
    with pytest.raises(InvalidFiltersError, match="bad_nan") as info:
        masterkey.FilterBank.from_tensors(
            {"fine": torch.randn(4, 1, 3, 3), "bad_nan": torch.full((4, 1, 3, 3), float("nan"))}
        )
    assert "fine" not in str(info.value)
    with pytest.raises(InvalidFiltersError, match="bad_inf"):
        masterkey.FilterBank.from_tensors({"bad_inf": torch.full((4, 1, 3, 3), float("inf"))})


def test_target_without_depthwise_convs_is_refused(mobilenet_bank):
    with pytest.raises(UnsupportedModelError, match="no depthwise convolution"):
        masterkey.from_pretrained_filters("resnet10t", mobilenet_bank, mapping="depth")


# -- universal re-rendering ------------------------------------------------------------------------------------------
def test_universal_resize_redraws_each_filter_from_its_key():
    from masterkey.fitting import fit_universal
    from masterkey.keys import idealized_keys

    scales = torch.tensor([2.0, -1.0, 3.0, 1.0, 0.5, -2.0, 1.0, -0.5])
    kernel = (idealized_keys(3) * scales[:, None, None] + 0.1)[:, None]
    resized = resize_kernel(kernel, (7, 7), method="universal")
    fit = fit_universal(resized, keys="idealized")
    assert fit.key.tolist() == list(range(8)) and fit.r2.min() > 0.999
    assert (torch.sign(fit.a) == torch.sign(scales)).all()
    torch.testing.assert_close(_flat(resized).sum(1), _flat(kernel).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_flat(resized).norm(dim=1), _flat(kernel).norm(dim=1))


def test_universal_resize_falls_back_to_geometric_for_bands_and_refuses_unknown_methods(mobilenet_bank):
    band = torch.randn(4, 1, 1, 9)
    fitted, transforms = fit_kernel(band, out_channels=4, kernel_size=(1, 5), resize="universal")
    assert transforms == ["kernel 1x9->1x5 centre-crop"]
    assert torch.equal(fitted, resize_kernel(band, (1, 5)))
    model = masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping="depth", resize="universal")
    assert all(e.transforms[-1].endswith("universal re-render") for e in model.masterkey_report.entries)
    with pytest.raises(ValueError, match="geometric, universal"):
        masterkey.from_pretrained_filters("convnext_atto", mobilenet_bank, mapping="depth", resize="bicubic")


def test_the_size_mapping_prefers_the_targets_own_kernel_size_at_any_depth():
    bank = masterkey.load_master_filters("imagenet-lite0")  # 3x3 and 5x5 at various depths
    model = timm.create_model("mobilenetv3_large_100")
    targets = masterkey.find_depthwise_convs(model)
    by_depth, by_size = match_by_stage(bank, targets), masterkey.mapping.match_by_size_then_stage(bank, targets)
    sizes = {s.name: s.kernel_size for s in bank.specs}
    assert all(sizes[by_size[t.name]] == t.spec.kernel_size for t in targets)  # no resizing anywhere
    assert any(sizes[by_depth[t.name]] != t.spec.kernel_size for t in targets)  # the depth rule resizes some
    model = masterkey.from_pretrained_filters(model, bank, mapping="size")
    assert all(not e.transforms or "kernel" not in " ".join(e.transforms) for e in model.masterkey_report.injected)


def test_every_named_mapping_is_offered_by_the_command_line_and_the_training_config():
    from masterkey.constants import MAPPING_NAMES
    from masterkey.mapping import MAPPINGS
    from masterkey.training import make_config

    assert tuple(MAPPINGS) == MAPPING_NAMES
    for name in MAPPING_NAMES:  # the earlier rule, stage, included
        assert make_config(model="tf_efficientnet_lite0", filters="imagenet-lite0", mapping=name).mapping == name
