"""FilterBank: the on-disk format, round trips bit for bit, and every kind of damaged bank."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import masterkey
from masterkey.bank import FilterBank, KernelSpec
from masterkey.constants import CONFIG_NAME, FILTERS_NAME, FORMAT_VERSION
from masterkey.errors import BankFormatError, BankNotFoundError, InvalidFiltersError, MasterKeyError


@pytest.fixture
def saved_bank(tmp_path, tiny_model):
    bank = masterkey.extract_filters(tiny_model, source_dataset="random-init", source_license="Apache-2.0")
    bank.save_pretrained(tmp_path / "bank")
    return bank, tmp_path / "bank"


def test_save_writes_the_three_files_in_the_documented_layout(saved_bank):
    bank, folder = saved_bank
    assert sorted(p.name for p in folder.iterdir()) == sorted([FILTERS_NAME, CONFIG_NAME, "README.md"])
    tensors = load_file(folder / FILTERS_NAME)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == FORMAT_VERSION and config["library_name"] == "masterkey"
    assert config["source_model"] == "convnext_atto" and config["source_dataset"] == "random-init"
    assert [e["name"] for e in config["filters"]] == bank.names
    first = config["filters"][0]
    assert first["name"] == "stages.0.blocks.0.conv_dw"
    assert first["kernel_size"] == [7, 7] and first["channel_multiplier"] == 1 and first["stage"] == 0
    # relative depth counts stages: ConvNeXt-atto has 4, of 2, 2, 6 and 2 blocks; a stage's blocks spread inside it
    assert first["relative_depth"] == (0 + 0.5 / 2) / 4 and config["filters"][-1]["relative_depth"] == (3 + 1.5 / 2) / 4
    for entry in config["filters"]:
        assert tensors[entry["name"]].dtype == torch.float32
        assert list(tensors[entry["name"]].shape) == [entry["out_channels"], 1, *entry["kernel_size"]]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: masterkey" in card and "convnext_atto" in card


def test_round_trip_is_bit_exact_and_keeps_the_manifest(saved_bank):
    bank, folder = saved_bank
    loaded = masterkey.load_master_filters(folder)
    assert loaded.names == bank.names and len(loaded) == len(bank) == 12
    assert loaded.num_parameters == bank.num_parameters == sum(t.numel() for _, t in bank.items())
    assert loaded.specs == bank.specs
    for name in bank.names:
        assert torch.equal(loaded[name], bank[name])
    assert loaded.config == bank.config


def test_bank_values_are_the_model_weights(tiny_model):
    bank = masterkey.extract_filters(tiny_model)
    for name in bank.names:
        assert torch.equal(bank[name], tiny_model.get_submodule(name).weight)
    assert "stages.0.blocks.0.conv_dw" in bank and "head.fc" not in bank
    with pytest.raises(KeyError, match="not in this bank"):
        bank["head.fc"]


def test_from_tensors_builds_a_valid_bank(tmp_path):
    bank = FilterBank.from_tensors({"a": torch.randn(4, 3, 3), "b": torch.randn(6, 1, 5, 5)}, source_dataset="noise")
    assert bank.names == ["a", "b"] and bank.spec("b").kernel_size == (5, 5) and bank.spec("b").relative_depth == 0.75
    # names without a stage number make one stage: its layers spread evenly, at 1/4 and 3/4
    bank.save_pretrained(tmp_path / "b")
    assert torch.equal(masterkey.load_master_filters(tmp_path / "b")["a"], bank["a"])


def test_kernel_spec_round_trips_through_dict():
    spec = KernelSpec("x", in_channels=8, out_channels=16, kernel_size=(1, 9), stride=(2, 2), index=3, stage=1)
    assert spec.channel_multiplier == 2 and spec.shape == (16, 1, 1, 9)
    assert KernelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# -- damaged banks: typed errors that say what to do -------------------------------------------------------------


def test_truncated_safetensors(saved_bank):
    _, folder = saved_bank
    data = (folder / FILTERS_NAME).read_bytes()
    (folder / FILTERS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(BankFormatError, match="truncated or not safetensors"):
        masterkey.load_master_filters(folder)


def test_corrupted_safetensors_header(saved_bank):
    _, folder = saved_bank
    (folder / FILTERS_NAME).write_bytes(b"\xff" * 64)
    with pytest.raises(BankFormatError):
        masterkey.load_master_filters(folder)


def test_missing_filters_file(saved_bank):
    _, folder = saved_bank
    (folder / FILTERS_NAME).unlink()
    with pytest.raises(BankFormatError, match=FILTERS_NAME):
        masterkey.load_master_filters(folder)


def test_missing_config(saved_bank):
    _, folder = saved_bank
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(BankFormatError, match=CONFIG_NAME):
        masterkey.load_master_filters(folder)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a masterkey bank config"),
        (json.dumps({"format_version": 1}), "no 'filters' manifest"),
        (json.dumps({"format_version": 1, "filters": [{"name": "x"}]}), "Malformed manifest entry"),
    ],
)
def test_malformed_config(saved_bank, content, match):
    _, folder = saved_bank
    (folder / CONFIG_NAME).write_text(content)
    with pytest.raises(BankFormatError, match=match):
        masterkey.load_master_filters(folder)


def test_unknown_format_version(saved_bank):
    _, folder = saved_bank
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(BankFormatError, match="Upgrade masterkey"):
        masterkey.load_master_filters(folder)


def test_tensor_shape_disagrees_with_manifest(saved_bank):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    first = bank.names[0]
    tensors[first] = tensors[first][:, :, :3, :3].contiguous()
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(BankFormatError, match=f"{first}: tensor \\(40, 1, 3, 3\\), manifest \\(40, 1, 7, 7\\)"):
        masterkey.load_master_filters(folder)


def test_tensor_missing_from_file(saved_bank):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    del tensors[bank.names[-1]]
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(BankFormatError, match="disagree"):
        masterkey.load_master_filters(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_kernels(saved_bank, bad):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    tensors[bank.names[2]][0, 0, 3, 3] = bad
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(InvalidFiltersError, match=bank.names[2].replace(".", r"\.")):
        masterkey.load_master_filters(folder)


def test_nan_model_cannot_be_extracted(tiny_model):
    with torch.no_grad():
        tiny_model.stages[1].blocks[0].conv_dw.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidFiltersError, match="stages.1.blocks.0.conv_dw"):
        masterkey.extract_filters(tiny_model)


def test_a_file_or_a_missing_folder_is_not_a_bank(saved_bank, tmp_path):
    _, folder = saved_bank
    with pytest.raises(BankNotFoundError, match="is a file"):
        masterkey.load_master_filters(folder / FILTERS_NAME)
    with pytest.raises(BankNotFoundError, match="neither an existing local folder nor a valid Hub repo id"):
        masterkey.load_master_filters(str(tmp_path / "no" / "such" / "bank"))


def test_every_error_is_a_masterkey_error():
    from masterkey import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), MasterKeyError)


def test_import_masterkey_does_not_import_extras():
    import subprocess
    import sys

    code = (
        "import sys, masterkey; masterkey.FilterBank; masterkey.from_pretrained_filters;"
        "bad=[m for m in ('accelerate','datasets','evaluate','transformers','matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr



def test_relative_depth_has_one_definition_whatever_the_file_says(tmp_path):
    from masterkey.bank import layer_positions, relative_depths

    names = ["stages.0.blocks.0.conv_dw", "stages.1.blocks.0.conv_dw", "stages.1.blocks.1.conv_dw"]
    # stage 0 of 2 holds one layer (its middle: 1/4), stage 1 two (3/8 and 7/8 of the way: 5/8, 7/8)
    assert relative_depths(names) == [0.25, 0.625, 0.875]
    # the splits of one MixedConv2d are one layer: same depth, spread positions
    mixed = layer_positions(["blocks.0.conv.0", "blocks.0.conv.1"])
    assert mixed["blocks.0.conv.0"][0] == mixed["blocks.0.conv.1"][0] and mixed["blocks.0.conv.1"][1] == 0.75
    bank = FilterBank.from_tensors({n: torch.randn(2, 1, 3, 3) for n in names})
    bank.save_pretrained(tmp_path / "b")
    config = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    for entry, depth in zip(config["filters"], [0.0, 0.5, 1.0]):  # an older file's index-based depths
        entry["relative_depth"] = depth
    (tmp_path / "b" / CONFIG_NAME).write_text(json.dumps(config))
    assert [s.relative_depth for s in FilterBank.from_pretrained(tmp_path / "b").specs] == [0.25, 0.625, 0.875]
