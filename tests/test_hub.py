"""Loading banks through huggingface_hub's own download and cache code, against a Hub-protocol server on loopback."""

import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download

import masterkey
from masterkey.errors import BankNotFoundError


@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory):
    """Two revisions of one bank repo: tag v1 and a later main whose kernels differ."""
    root = tmp_path_factory.mktemp("publish")
    v1 = masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3), "b": torch.randn(8, 1, 5, 5)},
                                           source_dataset="noise-v1")
    v1.save_pretrained(root / "v1")
    sha1 = local_hub.publish("org/noise-dw", root / "v1", tag="v1")
    # v2 comes from a model whose second conv has a channel multiplier of 2 (4 -> 8 channels): its manifest says so
    v2 = masterkey.extract_filters(_noise_model(), source_dataset="noise-v2")
    v2.save_pretrained(root / "v2")
    local_hub.publish("org/noise-dw", root / "v2", message="v2")
    return {"v1": v1, "v2": v2, "sha1": sha1}


def _noise_model():
    model = torch.nn.Sequential()
    model.add_module("a", torch.nn.Conv2d(4, 4, 3, groups=4, bias=False))
    model.add_module("b", torch.nn.Conv2d(4, 8, 5, groups=4, bias=False))  # channel multiplier 2
    return model


def _assert_same(a, b):
    assert a.names == b.names and a.config == b.config
    for name in a.names:
        assert torch.equal(a[name], b[name])


def test_load_by_repo_id_and_revision(published):
    _assert_same(masterkey.load_master_filters("org/noise-dw"), published["v2"])
    _assert_same(masterkey.load_master_filters("org/noise-dw", revision="v1"), published["v1"])
    _assert_same(masterkey.load_master_filters("org/noise-dw", revision=published["sha1"]), published["v1"])


def test_download_lands_in_the_hugging_face_cache(published, tmp_path):
    bank = masterkey.load_master_filters("org/noise-dw", cache_dir=tmp_path / "cache")
    _assert_same(bank, published["v2"])
    snapshots = list((tmp_path / "cache" / "models--org--noise-dw" / "snapshots").iterdir())
    assert len(snapshots) == 1 and {p.name for p in snapshots[0].iterdir()} == {"config.json", "filters.safetensors"}
    # snapshot_download of the same repo gets the model card too: the repo is a normal Hub model repo
    folder = snapshot_download("org/noise-dw", revision="v1", cache_dir=tmp_path / "cache")
    _assert_same(masterkey.load_master_filters(folder), published["v1"])


def test_offline_after_one_download(published, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    masterkey.load_master_filters("org/noise-dw", cache_dir=cache)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    _assert_same(masterkey.load_master_filters("org/noise-dw", cache_dir=cache), published["v2"])
    with pytest.raises(BankNotFoundError, match="not in the Hugging Face cache and downloads are off"):
        masterkey.load_master_filters("org/noise-dw", revision="v1", cache_dir=cache)
    with pytest.raises(BankNotFoundError, match="downloads are off"):
        masterkey.load_master_filters("org/other-dw", cache_dir=cache)


def test_local_files_only(published, tmp_path):
    with pytest.raises(BankNotFoundError, match="local_files_only"):
        masterkey.load_master_filters("org/noise-dw", cache_dir=tmp_path / "empty", local_files_only=True)


def test_missing_repo_and_revision(published, tmp_path):
    with pytest.raises(BankNotFoundError, match="No such repo"):
        masterkey.load_master_filters("org/does-not-exist", cache_dir=tmp_path)
    with pytest.raises(BankNotFoundError, match="revision 'v9'"):
        masterkey.load_master_filters("org/noise-dw", revision="v9", cache_dir=tmp_path)


def test_inject_straight_from_a_hub_id(published):
    bank = published["v2"]
    specs = {s.name: s for s in bank.specs}
    model = _noise_model()
    assert specs["b"].out_channels == 8 and specs["b"].channel_multiplier == 2
    masterkey.from_pretrained_filters(model, "org/noise-dw")
    assert torch.equal(model.b.weight, bank["b"]) and not model.b.weight.requires_grad
