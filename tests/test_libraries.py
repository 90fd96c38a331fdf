"""Banks from models built by other libraries: torchvision builders (local checkpoints, torchvision's own weights from
torch's hub cache) and transformers image models (a Hub repo on the loopback server written by ``save_pretrained``,
and a local folder), with where their weights came from recorded; and the library and class of any module."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file
from torch import nn

import masterkey
from masterkey import cli
from masterkey.errors import ArgumentError, CheckpointError, UnsupportedModelError
from masterkey.publishing import zoo_repo_name
from masterkey.sources import MOBILENET_V2_SHA256, imagenet_weights

transformers = pytest.importorskip("transformers")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _kernels_of(model: nn.Module, bank: masterkey.FilterBank) -> None:
    """Every kernel of the bank is the model's conv of that name, exactly."""
    for name in bank.names:
        assert torch.equal(bank[name], model.get_submodule(name).weight.detach().float()), name


# -- torchvision --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_v2_file():
    return imagenet_weights("mobilenetv2")


def test_a_torchvision_builder_with_a_checkpoint_records_library_class_builder_and_hash(mobilenet_v2_file):
    bank = masterkey.extract_filters("torchvision:mobilenet_v2", weights=mobilenet_v2_file)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_v2_file, map_location="cpu", weights_only=True), strict=True)
    assert len(bank) == 17 and bank.kernel_sizes == [(3, 3)]
    _kernels_of(reference, bank)
    cfg = bank.config
    assert cfg["source_library"] == "torchvision"
    assert cfg["source_class"] == "torchvision.models.mobilenetv2.MobileNetV2"
    assert cfg["source_model"] == cfg["source_builder"] == "mobilenet_v2"
    assert cfg["source_sha256"] == _sha256(mobilenet_v2_file) == MOBILENET_V2_SHA256
    assert cfg["source_weights"] == f"mobilenet_v2-b0353104.pth (sha256 {MOBILENET_V2_SHA256[:16]})"
    assert cfg["torchvision_version"] == torchvision.__version__


def test_the_cli_extracts_a_torchvision_builder_and_names_the_first_mismatch_of_a_checkpoint_that_does_not_fit(
    mobilenet_v2_file, tmp_path, capsys
):
    assert cli.main(["extract", "torchvision:mobilenet_v2", "--weights", str(mobilenet_v2_file), "--out",
                     str(tmp_path / "bank"), "--source-dataset", "imagenet-1k"]) == 0  # fmt: skip
    cfg = json.loads((tmp_path / "bank" / "config.json").read_text())
    assert cfg["source_sha256"] == MOBILENET_V2_SHA256 and cfg["source_dataset"] == "imagenet-1k"
    assert "torchvision.models.mobilenetv2.MobileNetV2" in (tmp_path / "bank" / "README.md").read_text()
    capsys.readouterr()
    # another builder: keys it does not have, keys it misses, the first of each named
    assert cli.main(["extract", "torchvision:mobilenet_v3_small", "--weights", str(mobilenet_v2_file), "--out",
                     str(tmp_path / "other")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("masterkey extract: error: The checkpoint") and "Traceback" not in err
    assert "does not fit torchvision's mobilenet_v3_small" in err
    state = torch.load(mobilenet_v2_file, weights_only=True)
    expected = torchvision.models.mobilenet_v3_small().state_dict()
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    assert f"{len(missing)} key(s) of the model missing from it, the first {missing[0]!r}" in err
    assert f"{len(unexpected)} key(s) the model does not have, the first {unexpected[0]!r}" in err


def test_a_checkpoint_with_a_missing_key_an_extra_key_or_another_shape_is_a_checkpoint_error(
    mobilenet_v2_file, tmp_path
):
    state = torch.load(mobilenet_v2_file, map_location="cpu", weights_only=True)
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "features.3.conv.1.0.weight"},
                    "1 key(s) of the model missing from it, the first 'features.3.conv.1.0.weight'"),
        "unexpected": ({**state, "extra.weight": torch.zeros(1)},
                       "1 key(s) the model does not have, the first 'extra.weight'"),
        "shape": (state, "2 shape(s) that differ, the first 'classifier.1.weight': (1000, 1280) in the checkpoint, "
                  "(10, 1280) in the model"),
    }  # fmt: skip
    for case, (tensors, message) in cases.items():
        path = tmp_path / f"{case}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        kwargs = {"num_classes": 10} if case == "shape" else {}
        with pytest.raises(CheckpointError, match=re.escape(message)):
            masterkey.extract_filters("torchvision:mobilenet_v2", weights=path, model_kwargs=kwargs)


def test_pickled_truncated_or_missing_checkpoints_are_refused_for_torchvision_too(mobilenet_v2_file, tmp_path):
    class Payload:  # a pickled object other than tensors: refused, never run
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').touch()",))

    torch.save({"features.0.0.weight": Payload()}, tmp_path / "pickled.pth")
    (tmp_path / "truncated.pth").write_bytes(Path(mobilenet_v2_file).read_bytes()[:100_000])
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    cases = {"pickled.pth": "never unpickles", "truncated.pth": "truncated or not", "missing.pth": "does not exist",
             "tensor.pth": "holds no state dict"}  # fmt: skip
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            masterkey.extract_filters("torchvision:mobilenet_v2", weights=tmp_path / name)
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_torchvision_names_that_cannot_be_used_are_typed_errors():
    with pytest.raises(UnsupportedModelError, match="Did you mean: mobilenet_v2"):
        masterkey.extract_filters("torchvision:mobilenet_v9", pretrained=False)
    with pytest.raises(ArgumentError, match="names an architecture, not weights"):
        masterkey.extract_filters("torchvision:mobilenet_v2")
    with pytest.raises(UnsupportedModelError, match="no depthwise convolution"):
        masterkey.extract_filters("torchvision:resnet18", pretrained=False)
    unknown = "no weights 'IMAGENET9K' for mobilenet_v2; its weights: IMAGENET1K_V1, IMAGENET1K_V2"
    with pytest.raises(UnsupportedModelError, match=unknown):
        masterkey.extract_filters("torchvision:mobilenet_v2.IMAGENET9K")
    random = masterkey.extract_filters("torchvision:mobilenet_v2", pretrained=False)
    assert random.config["source_weights"].startswith("randomly initialised") and "source_sha256" not in random.config


def test_torchvision_weights_by_name_come_from_torchs_hub_cache_checked_against_their_hash(
    mobilenet_v2_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(mobilenet_v2_file, cached)  # where torchvision's own download puts IMAGENET1K_V1
    bank = masterkey.extract_filters("torchvision:mobilenet_v2.IMAGENET1K_V1")
    from_file = masterkey.extract_filters("torchvision:mobilenet_v2", weights=mobilenet_v2_file)
    assert bank.names == from_file.names and all(torch.equal(bank[n], from_file[n]) for n in bank.names)
    cfg = bank.config
    assert cfg["source_tag"] == "IMAGENET1K_V1" and cfg["source_dataset"] == "imagenet-1k"
    assert cfg["source_sha256"] == MOBILENET_V2_SHA256 and cfg["source_license"] == "BSD-3-Clause"
    assert "download.pytorch.org/models/mobilenet_v2-b0353104.pth" in cfg["source_weights"]
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")  # a damaged cache entry
    with pytest.raises(CheckpointError, match=f"its SHA-256 is {_sha256(cached)}.*starts with b0353104"):
        masterkey.extract_filters("torchvision:mobilenet_v2.IMAGENET1K_V1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="not in torch's hub cache"):
        masterkey.extract_filters("torchvision:mobilenet_v2", pretrained=True)  # DEFAULT is IMAGENET1K_V2: not cached


def test_a_torchvision_banks_card_shows_where_it_came_from_and_its_snippet_runs(mobilenet_v2_file, tmp_path, capsys):
    bank = masterkey.extract_filters("torchvision:mobilenet_v2", weights=mobilenet_v2_file)
    bank.save_pretrained(tmp_path / "bank")
    again = masterkey.load_master_filters(tmp_path / "bank")
    new_keys = ("source_library", "source_class", "source_builder", "source_sha256", "torchvision_version")
    assert {k: again.config[k] for k in new_keys} == {k: bank.config[k] for k in new_keys}  # survive a round trip
    card = (tmp_path / "bank" / "README.md").read_text()
    assert "| source architecture (torchvision) | `mobilenet_v2` |" in card
    assert f"| SHA-256 of the weights file | `{MOBILENET_V2_SHA256}` |" in card
    assert f"| torchvision version | {torchvision.__version__} |" in card
    snippet = card.split("```python\n")[1].split("```")[0].replace("your-org/mobilenet_v2-dw", str(tmp_path / "bank"))
    exec(compile(snippet, "card", "exec"), {})
    assert "trainable params:" in capsys.readouterr().out


def test_the_cli_publishes_a_torchvision_builders_bank_and_names_its_repo_after_the_builder(mobilenet_v2_file,
                                                                                               tmp_path, capsys):
    out = tmp_path / "repo"
    assert cli.main(["publish", "torchvision:mobilenet_v2", "--weights", str(mobilenet_v2_file), "--out", str(out),
                     "--dry-run"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(r"would upload to [\w.-]+/mobilenet_v2-dw:", printed)
    bank = masterkey.load_master_filters(out)
    assert len(bank) == 17 and bank.config["source_sha256"] == MOBILENET_V2_SHA256
    assert "| SHA-256 of the weights file |" in (out / "README.md").read_text()
    assert zoo_repo_name("torchvision:mobilenet_v2.IMAGENET1K_V1") == "mobilenet_v2-imagenet-dw"
    assert cli.main(["publish", str(out), "--weights", str(mobilenet_v2_file), "--out", str(tmp_path / "again"),
                     "--dry-run"]) == 2  # fmt: skip
    assert "--weights goes with a model to extract" in capsys.readouterr().err
    assert not (tmp_path / "again" / "filters.safetensors").exists()


# -- any module ----------------------------------------------------------------------------------------------------
class OwnNet(nn.Sequential):
    """A user's own module, defined in this test file."""


def test_any_module_records_its_library_and_class(tmp_path):
    layers = (nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    sequential = masterkey.extract_filters(nn.Sequential(*layers)).config
    assert sequential["source_library"] == "torch"
    assert sequential["source_class"] == "torch.nn.modules.container.Sequential"
    own = masterkey.extract_filters(OwnNet(*layers)).config
    assert own["source_library"] == OwnNet.__module__.split(".")[0] and own["source_class"].endswith(".OwnNet")
    script = type("ScriptNet", (nn.Sequential,), {"__module__": "__main__"})  # a class defined in a script
    assert masterkey.extract_filters(script(*layers)).config["source_library"] == "user"
    model = timm.create_model("mobilenetv3_small_050")
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    cfg = masterkey.extract_filters("mobilenetv3_small_050", weights=tmp_path / "w.safetensors").config
    assert cfg["source_library"] == "timm" and cfg["source_class"] == "timm.models.mobilenetv3.MobileNetV3"
    assert cfg["timm_version"] == timm.__version__ and cfg["source_sha256"] == _sha256(tmp_path / "w.safetensors")
    masterkey.extract_filters(script(*layers)).save_pretrained(tmp_path / "b")
    text = (tmp_path / "b" / "README.md").read_text()  # a bank of a module no snippet can name: a timm model by depth
    assert "| source architecture (user) |" in text and 'from_pretrained_filters("convnext_atto", bank' in text
    assert 'mapping="depth"' in text


def test_a_timm_checkpoint_from_the_hub_records_the_sha256_of_its_weights_file(local_hub, tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model("mobilenetv3_small_050"), str(tmp_path / "repo"), safe_serialization=True)
    commit = local_hub.publish("org/tiny-timm-mobilenetv3", tmp_path / "repo")
    cfg = masterkey.extract_filters("hf-hub:org/tiny-timm-mobilenetv3").config
    assert cfg["source_sha256"] == _sha256(tmp_path / "repo" / "model.safetensors")
    assert cfg["source_revision"] == commit and cfg["source_library"] == "timm"


# -- transformers --------------------------------------------------------------------------------------------------
def _tiny_convnext(seed: int):
    torch.manual_seed(seed)
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, num_labels=3, image_size=32)
    return transformers.ConvNextForImageClassification(config).eval()


@pytest.fixture(scope="module")
def served(local_hub, tmp_path_factory):
    """Two commits of a tiny ConvNeXt written by ``save_pretrained`` (with a card stating its licence and data)."""
    commits, models = [], []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"convnext-{seed}")
        model = _tiny_convnext(seed)
        model.save_pretrained(folder)
        card = ModelCard.from_template(ModelCardData(license="apache-2.0", datasets=["imagenet-1k"]))
        card.save(folder / "README.md")
        commits.append(local_hub.publish("org/tiny-convnext", folder, message=f"seed {seed}"))
        models.append((model, folder))
    return commits, models


def test_a_transformers_model_on_the_hub_extracts_through_transformers_with_its_commit(served):
    commits, models = served
    bank = masterkey.extract_filters("transformers:org/tiny-convnext")
    model, folder = models[-1]
    assert len(bank) == 3 and bank.kernel_sizes == [(7, 7)]
    _kernels_of(model, bank)
    cfg = bank.config
    assert cfg["source_revision"] == commits[-1] and cfg["source_hub_id"] == "org/tiny-convnext"
    assert cfg["source_weights"] == f"transformers:org/tiny-convnext@{commits[-1]} (sha256 {cfg['source_sha256'][:16]})"
    assert cfg["source_sha256"] == _sha256(folder / "model.safetensors")
    assert cfg["source_library"] == "transformers" and cfg["transformers_version"] == transformers.__version__
    assert cfg["source_class"] == "transformers.models.convnext.modeling_convnext.ConvNextForImageClassification"
    assert cfg["source_license"] == "apache-2.0" and cfg["source_dataset"] == "imagenet-1k"
    # an earlier commit by revision
    first = masterkey.extract_filters(f"transformers:org/tiny-convnext@{commits[0]}")
    _kernels_of(models[0][0], first)
    assert first.config["source_revision"] == commits[0]
    assert not all(torch.equal(first[n], bank[n]) for n in bank.names)


def test_a_transformers_folder_and_the_cli(served, tmp_path):
    _, models = served
    model, folder = models[0]
    bank = masterkey.extract_filters(f"transformers:{folder}")
    _kernels_of(model, bank)
    cfg = bank.config
    assert cfg["source_weights"] == f"{folder} (sha256 {_sha256(folder / 'model.safetensors')[:16]})"
    assert "source_hub_id" not in cfg and "source_revision" not in cfg and cfg["source_license"] == "apache-2.0"
    assert cli.main(["extract", "transformers:org/tiny-convnext", "--out", str(tmp_path / "b")]) == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["source_revision"] == served[0][-1]
    card = (tmp_path / "b" / "README.md").read_text()
    assert "base_model: org/tiny-convnext" in card and f"`{served[0][-1]}`" in card
    assert cli.main(["extract", "transformers:org/tiny-convnext", "--random", "--out", str(tmp_path / "c")]) == 2


def test_transformers_models_offline_from_the_cache_and_what_cannot_be_used(served, tmp_path, monkeypatch):
    first = masterkey.extract_filters("transformers:org/tiny-convnext")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    again = masterkey.extract_filters("transformers:org/tiny-convnext")
    assert again.names == first.names and again.config["source_revision"] == first.config["source_revision"]
    with pytest.raises(CheckpointError, match="downloads are off"):
        masterkey.extract_filters("transformers:org/never-downloaded")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(CheckpointError, match="Cannot load the transformers model 'org/missing'"):
        masterkey.extract_filters("transformers:org/missing")
    text_model = tmp_path / "bert"
    bert = transformers.BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=8)  # fmt: skip
    transformers.BertModel(bert).save_pretrained(text_model)
    with pytest.raises(UnsupportedModelError, match="builds no image classifier"):
        masterkey.extract_filters(f"transformers:{text_model}")
    resnet = tmp_path / "resnet"
    transformers.ResNetForImageClassification(transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16],
                                                                        depths=[1, 1])).save_pretrained(resnet)
    with pytest.raises(UnsupportedModelError, match="no depthwise convolution"):
        masterkey.extract_filters(f"transformers:{resnet}")
    with pytest.raises(UnsupportedModelError, match="holds no config.json"):
        masterkey.extract_filters(f"transformers:{tmp_path}")
    with pytest.raises(ArgumentError, match="drop weights="):
        masterkey.extract_filters(f"transformers:{resnet}", weights=tmp_path / "w.safetensors")
