"""Banks from pretrained checkpoints, through timm's own Hub loading, offline against the loopback Hub server.

The server holds a timm-format repo written with timm's ``save_for_hf`` from the real ImageNet lite0 weights, under
the id timm resolves for ``tf_efficientnet_lite0.in1k`` and under a user's id for ``hf-hub:``.
"""

from __future__ import annotations

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.models import save_for_hf

import masterkey
from masterkey.errors import ArgumentError, CheckpointError, UnsupportedModelError
from masterkey.sources import imagenet_lite0_model


@pytest.fixture(scope="module")
def served(local_hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("timm-repo")
    model = imagenet_lite0_model()
    model.pretrained_cfg = {**timm.models.get_pretrained_cfg("tf_efficientnet_lite0.in1k").to_dict(),
                            "architecture": "tf_efficientnet_lite0"}  # fmt: skip
    save_for_hf(model, str(folder), safe_serialization=True)
    commits = {
        "timm/tf_efficientnet_lite0.in1k": local_hub.publish("timm/tf_efficientnet_lite0.in1k", folder),
        "org/lite0-timm": local_hub.publish("org/lite0-timm", folder),
    }
    return commits


def _same(a, b):
    assert a.names == b.names and all(torch.equal(a[n], b[n]) for n in a.names)


@pytest.mark.parametrize(("name", "repo"), [("tf_efficientnet_lite0.in1k", "timm/tf_efficientnet_lite0.in1k"),
                                            ("hf-hub:org/lite0-timm", "org/lite0-timm")])  # fmt: skip
def test_a_tag_or_a_hub_id_means_the_pretrained_weights(served, name, repo):
    bank = masterkey.extract_filters(name)
    _same(bank, masterkey.load_master_filters("imagenet-lite0"))
    cfg = bank.config
    assert cfg["source_hub_id"] == repo and cfg["source_revision"] == served[repo]
    assert cfg["source_weights"] == f"hf-hub:{repo}@{served[repo]}"
    assert cfg["source_tag"] == "in1k" and cfg["source_dataset"] == "imagenet-1k"
    assert cfg["source_license"] == "apache-2.0" and cfg["timm_version"] == timm.__version__


def test_a_second_extraction_works_offline_from_the_cache_and_an_uncached_one_is_a_typed_error(served, monkeypatch):
    first = masterkey.extract_filters("tf_efficientnet_lite0.in1k")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    _same(masterkey.extract_filters("tf_efficientnet_lite0.in1k"), first)
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        masterkey.extract_filters("tf_efficientnet_lite1.in1k")  # never downloaded


def test_random_kernels_only_when_asked_for(served):
    with pytest.raises(ArgumentError, match="names an architecture, not weights"):
        masterkey.extract_filters("tf_efficientnet_lite0")
    random = masterkey.extract_filters("tf_efficientnet_lite0", pretrained=False)
    assert random.config["source_weights"].startswith("randomly initialised")
    assert "baseline" in random.config["description"]
    with pytest.raises(UnsupportedModelError, match="its tags: tf_efficientnet_lite0.in1k"):
        masterkey.extract_filters("tf_efficientnet_lite0.in22k")
    with pytest.raises(UnsupportedModelError, match="hf-hub:org/lite0-timm"):
        masterkey.extract_filters("org/lite0-timm")


def test_a_training_runs_folder_is_a_checkpoint_too(tmp_path):
    from timm.models import save_for_hf

    torch.manual_seed(3)
    model = timm.create_model("mobilenetv3_small_050", num_classes=5)
    save_for_hf(model, str(tmp_path / "run"), safe_serialization=True)
    bank = masterkey.extract_filters(f"local-dir:{tmp_path / 'run'}", source_dataset="my-photos")
    assert all(torch.equal(bank[n], model.get_submodule(n).weight) for n in bank.names)
    cfg = bank.config
    assert cfg["source_weights"].startswith(f"local-dir:{tmp_path / 'run'} (sha256 ")
    assert "source_tag" not in cfg and "source_license" not in cfg  # the folder's timm config says nothing of these
    with pytest.raises(UnsupportedModelError, match="timm's Hub layout"):
        masterkey.extract_filters(f"local-dir:{tmp_path / 'nothing'}")


def test_training_starts_from_the_served_weights_with_its_own_depthwise_kernels_frozen(served, tmp_path):
    from masterkey.sources import imagenet_lite0_model
    from masterkey.training import train_transfer

    results = train_transfer(model="hf-hub:org/lite0-timm", filters="own", dataset_name="digits", resolution=32,
                             max_train_steps=2, per_device_train_batch_size=8, max_train_samples=32,
                             max_eval_samples=16, output_dir=str(tmp_path / "run"), cpu_threads=1,
                             dataloader_num_workers=0)  # fmt: skip
    trained = timm.create_model(f"local-dir:{tmp_path / 'run'}", pretrained=True)
    served_model = imagenet_lite0_model()
    # the frozen depthwise kernels are still exactly the served ImageNet ones after training
    for conv in masterkey.find_depthwise_convs(trained):
        assert torch.equal(conv.module.weight, served_model.get_submodule(conv.name).weight), conv.name
    body = results["filters"]["body"]
    assert body["source_hub_id"] == "org/lite0-timm" and body["source_revision"] == served["org/lite0-timm"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "base_model: org/lite0-timm" in card and "license:" in card


def test_the_pretrained_flag_needs_weights_that_exist(served, tmp_path):
    from masterkey.training import train_transfer

    with pytest.raises(UnsupportedModelError, match="no pretrained weights"):
        train_transfer(model="mobilenetv3_small_050.nosuchtag", filters="none", dataset_name="digits",
                       output_dir=str(tmp_path / "run"))  # fmt: skip
    assert not (tmp_path / "run" / "results.json").exists()


def test_publish_dry_run_from_a_tag_writes_a_card_that_names_checkpoint_commit_and_licence(served, tmp_path, capsys):
    from huggingface_hub import ModelCard

    from masterkey import cli

    out = tmp_path / "lite0"
    assert cli.main(["publish", "tf_efficientnet_lite0.in1k", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload to masterkey-filters/tf_efficientnet_lite0-imagenet-dw:" in printed
    assert {p.name for p in out.iterdir() if p.is_file()} == {"README.md", "config.json", "filters.safetensors"}
    card = ModelCard.load(out / "README.md")
    commit = served["timm/tf_efficientnet_lite0.in1k"]
    assert card.data.license == "apache-2.0" and card.data.base_model == "timm/tf_efficientnet_lite0.in1k"
    assert "timm/tf_efficientnet_lite0.in1k" in card.text and commit in card.text and "in1k" in card.text
    _same(masterkey.load_master_filters(out), masterkey.load_master_filters("imagenet-lite0"))


def test_a_bank_of_non_commercial_weights_is_non_commercial(tmp_path):
    bank = masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3)}, source_license="cc-by-nc-4.0")
    bank.save_pretrained(tmp_path / "b")
    from huggingface_hub import ModelCard

    assert ModelCard.load(tmp_path / "b" / "README.md").data.license == "cc-by-nc-4.0"
