"""Finding depthwise convs in real timm models and extracting them."""

from pathlib import Path

import pytest
import timm
import torch
from timm.layers import CondConv2d, Conv2dSame, MixedConv2d
from torch import nn

import masterkey
from masterkey.errors import UnsupportedModelError
from masterkey.extract import find_depthwise_convs, is_depthwise


def test_mixed_conv_splits_are_separate_entries_and_conv2d_same_is_found():
    model = timm.create_model("tf_mixnet_s")
    convs = find_depthwise_convs(model)
    names = [c.name for c in convs]
    mixed = [n for n, m in model.named_modules() if isinstance(m, MixedConv2d) and m[next(iter(m))].groups > 1]
    assert mixed, "tf_mixnet_s has mixed depthwise convs"
    for parent in mixed:
        splits = [n for n in names if n.startswith(parent + ".")]
        assert len(splits) == len(model.get_submodule(parent))
        sizes = {model.get_submodule(n).kernel_size for n in splits}
        assert len(sizes) == len(splits), "each split has its own kernel size"
    same = [c.name for c in convs if isinstance(c.module, Conv2dSame)]
    assert same, "TF-style 'same' padding convs are depthwise convs too"
    assert [c.spec.index for c in convs] == list(range(len(convs)))


def test_channel_multiplier_and_manifest_fields():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=8),
                          nn.Conv2d(16, 16, 5, padding=2, groups=16), nn.Conv2d(16, 16, 1, groups=16))
    convs = find_depthwise_convs(model)
    assert [c.name for c in convs] == ["1", "2"]  # the 1x1 depthwise conv is a per-channel scale, not a filter
    first = convs[0].spec
    assert first.channel_multiplier == 2 and first.stride == (2, 2) and first.dilation == (2, 2)
    assert first.shape == (16, 1, 3, 3) and first.relative_depth == 0.25 and convs[1].spec.relative_depth == 0.75
    # modules "1" and "2" are two stages of one conv each: each sits in the middle of its half
    bank = masterkey.extract_filters(model)
    assert bank.config["source_model"] == "Sequential" and tuple(bank["1"].shape) == (16, 1, 3, 3)


def test_stage_is_the_top_level_block_index():
    convs = find_depthwise_convs(timm.create_model("mobilenetv3_small_050"))
    assert [c.spec.stage for c in convs] == [int(c.name.split(".")[1]) for c in convs]


def test_model_without_depthwise_convs_is_refused():
    with pytest.raises(UnsupportedModelError, match="no depthwise convolution"):
        masterkey.extract_filters(timm.create_model("resnet10t"))


def test_condconv_only_model_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), CondConv2d(8, 8, 3, padding=1, groups=8, num_experts=4))
    assert not is_depthwise(model[1])
    with pytest.raises(UnsupportedModelError, match="CondConv2d"):
        find_depthwise_convs(model)


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(UnsupportedModelError, match="convnext_atto"):
        masterkey.extract_filters("convnext_ato")


def test_reparameterizable_models_are_fused_on_a_copy_or_refused():
    torch.manual_seed(0)
    model = timm.create_model("repvit_m1").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="reparameterize_model"):
        masterkey.extract_filters(model, reparameterize=False)
    bank = masterkey.extract_filters(model)
    assert len(bank) == 26
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the fused kernels are what the fused model computes with, and the fused model computes the same function
    fused = timm.utils.reparameterize_model(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)
    for name in bank.names:
        torch.testing.assert_close(bank[name], fused.get_submodule(name).weight)


def test_extract_from_a_timm_name_with_weights(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("mobilenetv3_small_050")
    from safetensors.torch import save_file

    save_file(source.state_dict(), tmp_path / "weights.safetensors")
    bank = masterkey.extract_filters("mobilenetv3_small_050", weights=tmp_path / "weights.safetensors",
                                     source_dataset="test")
    for name in bank.names:
        assert torch.equal(bank[name], source.get_submodule(name).weight)
    assert bank.config["source_model"] == "mobilenetv3_small_050"
    with pytest.raises(UnsupportedModelError, match="does not fit"):
        masterkey.extract_filters("convnext_atto", weights=tmp_path / "weights.safetensors")


def test_weights_that_cannot_be_read_are_typed_errors(tmp_path):
    from masterkey.errors import CheckpointError

    class Payload:  # a pickled object other than tensors: refused, never run
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))

    torch.save({"x": Payload()}, tmp_path / "pickled.pth")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "pickled.pth").read_bytes()[:40])
    cases = {"missing.safetensors": "does not exist", ".": "is a folder", "corrupt.safetensors": "truncated or not",
             "truncated.pth": "truncated or not", "pickled.pth": "never unpickles"}  # fmt: skip
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            masterkey.extract_filters("mobilenetv3_small_050", weights=tmp_path / name)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_building_a_bank_from_weights_draws_nothing_from_the_global_random_stream(tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm.create_model("mobilenetv3_small_050").state_dict().items()},
              str(tmp_path / "w.safetensors"))  # fmt: skip
    torch.manual_seed(0)
    masterkey.extract_filters("mobilenetv3_small_050", weights=tmp_path / "w.safetensors")
    after_extraction = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_extraction)  # a cached bank and a built one leave the same stream
