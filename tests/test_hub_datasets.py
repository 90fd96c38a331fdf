"""A Hub image dataset (``--dataset_name org/name``), served by the loopback Hub server as a dataset repo of parquet
files, through ``datasets``' own download and cache code: loaded, trained on, and loaded again offline."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from huggingface_hub import constants as hf_constants
from PIL import Image

from masterkey.errors import DatasetError
from masterkey.training import load_image_dataset, train_transfer

_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: test
    path: data/test-*.parquet
---
# tiny

Six 24x24 colour images in two classes per split, made for masterkey's tests.
"""


@pytest.fixture(scope="module")
def hub_dataset(local_hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-dataset")
    (folder / "data").mkdir()
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["dark", "light"])})
    for split, n in (("train", 12), ("test", 6)):
        labels = [i % 2 for i in range(n)]
        images = [Image.fromarray((rng.integers(0, 100, (24, 24, 3)) + 150 * y).astype(np.uint8)) for y in labels]
        ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    (folder / "README.md").write_text(_README)
    local_hub.publish("heldout/tiny", folder, repo_type="dataset")
    return "heldout/tiny"


def test_a_hub_dataset_loads_trains_and_loads_again_offline(hub_dataset, tmp_path, monkeypatch):
    dsd = load_image_dataset(hub_dataset)
    assert set(dsd) == {"train", "test"} and len(dsd["train"]) == 12
    assert dsd["train"].features["label"].names == ["dark", "light"]
    results = train_transfer(model="mobilenetv3_small_050", filters="none", dataset_name=hub_dataset, resolution=32,
                             max_train_steps=2, per_device_train_batch_size=4, output_dir=str(tmp_path / "run"),
                             cpu_threads=1, dataloader_num_workers=0)  # fmt: skip
    assert results["completed_steps"] == 2 and results["dataset"]["hub"] and results["dataset"]["num_eval"] == 6
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    again = load_image_dataset(hub_dataset)
    assert again["test"]["label"] == dsd["test"]["label"]


def test_an_unknown_hub_dataset_is_a_typed_error(local_hub):
    with pytest.raises(DatasetError):
        load_image_dataset("heldout/no-such-dataset")
