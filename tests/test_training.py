"""Transfer training, in process: built-in datasets, any-dataset loading, columns and labels, the metric module, the
command line, and the typed errors for bad input (everything that fails before a training step).

The runs themselves (real Accelerate launches, resume after a kill) are in test_training_runs.py.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from conftest import run_example
from PIL import Image

import masterkey
from masterkey.errors import (
    DatasetError,
    IncompatibleBankError,
    MasterKeyError,
    TrainingConfigError,
    UnsupportedModelError,
)
from masterkey.training import (
    BUILTIN_DATASETS,
    DEMO_ARGS,
    load_accuracy_metric,
    load_builtin_dataset,
    load_image_dataset,
    parse_args,
    prepare_splits,
    train_transfer,
)
from masterkey.training.data import ImageClassificationDataset, timm_transforms

FAST = dict(model="mobilenetv3_small_050", dataset_name="digits", resolution=32, filters="none")


@pytest.fixture(scope="module")
def digits():
    return load_builtin_dataset("digits")


# -- built-in datasets -----------------------------------------------------------------------------------------------
def test_builtin_datasets_are_real_datasetdicts_with_fixed_splits(digits):
    animals = load_builtin_dataset("animal-mnist")
    for dsd, n_train, n_test in ((animals, 8000, 2000), (digits, 1438, 359)):
        assert isinstance(dsd, datasets.DatasetDict) and set(dsd) == {"train", "test"}
        assert (len(dsd["train"]), len(dsd["test"])) == (n_train, n_test)
        assert isinstance(dsd["train"].features["image"], datasets.Image)
        assert isinstance(dsd["train"].features["label"], datasets.ClassLabel)
    assert animals["train"].features["label"].names == [
        "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
    ]  # fmt: skip
    # stratified: 200 test images per animal class, classes interleaved (not sorted by label)
    assert np.bincount(animals["test"]["label"]).tolist() == [200] * 10
    assert len(set(animals["train"]["label"][:20])) > 3
    image = animals["train"][0]["image"]
    assert image.size == (28, 28) and image.mode == "L"
    # cached by datasets under a fingerprint: a second load reads the same Arrow files, same rows
    again = load_builtin_dataset("animal-mnist")
    assert again["train"].cache_files == animals["train"].cache_files
    assert again["test"]["label"] == animals["test"]["label"]
    assert str(datasets.config.HF_DATASETS_CACHE) in again["train"].cache_files[0]["filename"]


def test_adding_a_builtin_dataset_is_a_few_lines(tmp_path, monkeypatch):
    from masterkey.training.data import BuiltinDataset, register_dataset

    def arrays():
        return np.arange(40 * 4 * 4, dtype=np.uint8).reshape(40, 4, 4), np.arange(40) % 2

    monkeypatch.setitem(BUILTIN_DATASETS, "toy", None)  # removed again after the test
    register_dataset(BuiltinDataset("toy", ("even", "odd"), arrays, "40 toy images", "a test", "mit"))
    dsd = load_image_dataset("toy", cache_dir=tmp_path)
    assert (len(dsd["train"]), len(dsd["test"])) == (32, 8)
    assert dsd["test"].features["label"].names == ["even", "odd"]


# -- any dataset: columns, labels, splits ----------------------------------------------------------------------------
def _images(modes, size=12):
    rng = np.random.default_rng(0)
    out = []
    for mode in modes:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 255, (size, size, channels), dtype=np.uint8)
        out.append(Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode))
    return out


def test_string_labels_get_a_stable_mapping_and_images_become_rgb(tmp_path):
    modes = ["L", "RGBA", "RGB", "L", "RGBA", "RGB"]
    train = datasets.Dataset.from_dict(
        {"picture": _images(modes), "kind": ["owl", "cat", "dog", "cat", "owl", "dog"]},
        features=datasets.Features({"picture": datasets.Image(), "kind": datasets.Value("string")}),
    )
    valid = datasets.Dataset.from_dict(
        {"picture": _images(["RGBA", "L"]), "kind": ["dog", "ant"]},
        features=train.features,
    )
    datasets.DatasetDict(train=train, validation=valid).save_to_disk(str(tmp_path / "saved"))
    dsd = load_image_dataset(str(tmp_path / "saved"))
    splits = prepare_splits(dsd, label_column="kind")
    assert splits.image_column == "picture" and splits.eval_source == "validation"
    assert splits.label_names == ["ant", "cat", "dog", "owl"]  # sorted over both splits: the same on every run
    model = timm_model()
    train_tf, eval_tf, config = timm_transforms(model, 32)
    ds = ImageClassificationDataset(splits.train, image_column="picture", label_column="kind", transform=train_tf,
                                    label_to_id=splits.label_to_id)  # fmt: skip
    items = ds.__getitems__(list(range(len(ds))))
    assert [i["labels"] for i in items] == [3, 1, 2, 1, 3, 2]
    assert all(i["pixel_values"].shape == (3, 32, 32) for i in items)
    assert config["input_size"] == (3, 32, 32)


def test_integer_labels_without_classlabel_and_no_eval_split():
    ds = datasets.Dataset.from_dict(
        {"img": _images(["RGB"] * 20), "y": [7, 3] * 10},
        features=datasets.Features({"img": datasets.Image(), "y": datasets.Value("int64")}),
    )
    splits = prepare_splits(datasets.DatasetDict(train=ds), label_column="y", train_val_split=0.25, seed=1)
    assert splits.label_names == ["3", "7"] and splits.label_to_id == {3: 0, 7: 1}
    assert (len(splits.train), len(splits.eval), splits.eval_source) == (15, 5, "train")
    assert set(splits.train_rows.tolist()).isdisjoint(splits.eval_rows.tolist())
    assert splits.notes and "held out" in splits.notes[0]


def test_validation_from_train_holds_out_training_rows_and_never_reads_the_test_split(digits):
    """Hyperparameters are tuned on a share of train held out: the test split is not the evaluation split, no row is
    in both train and evaluation, and another seed draws another held-out share."""
    splits = prepare_splits(digits, validation_from_train=True, train_val_split=0.2, seed=0)
    assert splits.eval_source == "train (held out)" and "--validation_from_train" in splits.notes[0]
    assert (len(splits.train), len(splits.eval)) == (1438 - 288, 288)
    assert set(splits.train_rows.tolist()).isdisjoint(splits.eval_rows.tolist())
    assert sorted([*splits.train_rows.tolist(), *splits.eval_rows.tolist()]) == list(range(1438))
    other = prepare_splits(digits, validation_from_train=True, train_val_split=0.2, seed=1)
    assert set(other.eval_rows.tolist()) != set(splits.eval_rows.tolist())
    assert prepare_splits(digits).eval_source == "test"


def test_columns_are_detected_and_missing_ones_listed(digits):
    splits = prepare_splits(digits, max_train_samples=50, max_eval_samples=20)
    assert (splits.image_column, splits.label_column, splits.num_labels) == ("image", "label", 10)
    assert (len(splits.train), len(splits.eval)) == (50, 20)
    no_image = datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}))
    with pytest.raises(DatasetError, match=r"no image column.*text \(Value\), label \(Value\)"):
        prepare_splits(no_image)
    no_label = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": _images(["RGB"] * 2), "caption": ["a", "b"]})
    )
    with pytest.raises(DatasetError, match=r"no label column.*image \(Image\), caption \(Value\)"):
        prepare_splits(no_label)
    with pytest.raises(DatasetError, match="'nope' is not a column"):
        prepare_splits(digits, label_column="nope")


def test_an_empty_split_is_refused(digits):
    empty = datasets.DatasetDict(train=digits["train"], test=digits["test"].select([]))
    with pytest.raises(DatasetError, match="The test split of digits is empty"):
        prepare_splits(empty, source="digits")


def test_an_unreadable_image_fails_with_its_row(tmp_path):
    for name, cls in (("a.png", "cat"), ("b.png", "cat"), ("c.png", "dog"), ("d.png", "dog")):
        (tmp_path / "train" / cls).mkdir(parents=True, exist_ok=True)
        _images(["RGB"])[0].save(tmp_path / "train" / cls / name)
    (tmp_path / "train" / "dog" / "d.png").write_bytes(b"this is not a png")
    dsd = load_image_dataset(train_dir=tmp_path / "train")
    splits = prepare_splits(dsd, train_val_split=0.25)
    _, eval_tf, _ = timm_transforms(timm_model(), 32)
    full = ImageClassificationDataset(dsd["train"], image_column="image", label_column="label", transform=eval_tf)
    bad = [i for i, f in enumerate(dsd["train"].cast_column("image", datasets.Image(decode=False))["image"])
           if f["path"].endswith("d.png")][0]  # fmt: skip
    with pytest.raises(DatasetError, match=rf"row {bad} of the train split cannot be read"):
        full.__getitems__([0, 1, 2, 3])
    assert splits.num_labels == 2
    # a folder of class folders given as --dataset_name loads as an imagefolder too
    by_name = load_image_dataset(str(tmp_path / "train"))
    assert by_name["train"].features["label"].names == ["cat", "dog"] and len(by_name["train"]) == 4


def test_unknown_dataset_is_a_dataset_error():
    with pytest.raises(DatasetError, match="Did you mean the built-in animal-mnist"):
        load_image_dataset("animal-mnst")
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_dataset(train_dir="/nonexistent/folder")


# -- the metric module -----------------------------------------------------------------------------------------------
def test_accuracy_metric_ships_inside_the_package_and_loads_by_path():
    metric = load_accuracy_metric()
    assert metric.compute(predictions=[[1, 0, 2, 3, 4], [0, 1, 2, 3, 4], [9, 8, 7, 6, 5]],
                          references=[1, 4, 0]) == pytest.approx(
        {"accuracy": 1 / 3, "top5_accuracy": 2 / 3, "num_examples": 3}
    )  # fmt: skip
    assert metric.compute(predictions=[1, 2], references=[1, 1]) == {"accuracy": 0.5, "num_examples": 2}


# -- configuration and the command line ------------------------------------------------------------------------------
def timm_model():
    return masterkey._timm.create_model("mobilenetv3_small_050", num_classes=3)


def test_no_arguments_is_the_offline_demo():
    config = parse_args([])
    assert config.compare_with_scratch and config.filters == "imagenet-lite0"
    assert config.model == "tf_efficientnet_lite0" and config.dataset_name == "animal-mnist"
    assert config.resolution == int(DEMO_ARGS[DEMO_ARGS.index("--resolution") + 1])
    assert parse_args(["--checkpointing_steps", "5"]).checkpointing_steps == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpointing_steps", "sometimes"], "checkpointing_steps"),
        (["--train_val_split", "1.5"], "train_val_split"),
        (["--dataset_name", "digits", "--train_dir", "x"], "not both"),
        (["--resume_from_checkpoint", "latest"], "output_dir"),
        (["--filters", "none", "--compare_with_scratch"], "compare"),
    ],
)
def test_contradictory_options_are_training_config_errors(argv, message):
    with pytest.raises(TrainingConfigError, match=message):
        parse_args(argv)


def test_errors_print_one_line_and_exit_2(tmp_path, capsys):
    code = run_example(["--model", "mobilenetv3_small_05", "--dataset_name", "digits", "--output_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "UnsupportedModelError" in err and "mobilenetv3_small_050" in err and "Traceback" not in err


# -- bad input to a run: typed errors before any training ------------------------------------------------------------
def test_unknown_model_lists_close_matches(tmp_path):
    with pytest.raises(UnsupportedModelError, match="Did you mean.*mobilenetv3_small_050"):
        train_transfer(**{**FAST, "model": "mobilenetv3_smal_050"}, output_dir=str(tmp_path))


def test_model_kwargs_reach_create_model_and_travel_with_the_saved_model(tmp_path):
    import timm
    from safetensors.torch import load_file

    # ConvNeXt's layer scale starts at 1e-6 by timm's default; --model_kwargs starts it at 1
    options = dict(model="convnext_atto", dataset_name="digits", resolution=32, max_train_samples=16,
                   max_eval_samples=16, per_device_train_batch_size=8, max_train_steps=1, cpu_threads=1)  # fmt: skip
    results = train_transfer(**options, filters="imagenet-lite0", mapping="depth",
                             model_kwargs={"ls_init_value": 1.0}, learning_rate=1e-4,
                             output_dir=str(tmp_path / "ls1"))  # fmt: skip
    assert results["config"]["model_kwargs"] == {"ls_init_value": 1.0}
    gammas = [v for k, v in load_file(str(tmp_path / "ls1" / "model.safetensors")).items() if k.endswith(".gamma")]
    assert gammas and all(abs(g.float().mean().item() - 1.0) < 0.01 for g in gammas)  # one step at lr 1e-4 from 1
    saved = json.loads((tmp_path / "ls1" / "config.json").read_text())
    assert saved["model_args"]["ls_init_value"] == 1.0 and "num_classes" not in saved["model_args"]
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'ls1'}", pretrained=True)
    assert reloaded.stages[0].blocks[0].gamma.mean().item() == pytest.approx(gammas[0].float().mean().item(), abs=0.01)
    with pytest.raises(UnsupportedModelError, match="ls_init_valu"):  # timm refuses an argument it does not know
        train_transfer(**options, filters="none", model_kwargs={"ls_init_valu": 1.0}, output_dir=str(tmp_path / "bad"))


def test_a_bank_that_does_not_fit_the_model(tmp_path):
    with pytest.raises(IncompatibleBankError, match="does not fit"):
        train_transfer(**{**FAST, "filters": "imagenet-lite0"}, max_train_samples=8, output_dir=str(tmp_path))


def test_a_missing_filter_bank(tmp_path):
    with pytest.raises(MasterKeyError, match="a built-in: imagenet-lite0"):
        train_transfer(**{**FAST, "filters": str(tmp_path / "no-bank")}, max_train_samples=8,
                       output_dir=str(tmp_path / "out"))  # fmt: skip


def test_a_dataset_without_an_image_column_through_a_run(tmp_path):
    datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})).save_to_disk(
        str(tmp_path / "text")
    )
    with pytest.raises(DatasetError, match="no image column.*text"):
        train_transfer(**{**FAST, "dataset_name": str(tmp_path / "text")}, output_dir=str(tmp_path / "out"))


def test_resume_from_a_checkpoint_that_does_not_exist(tmp_path):
    with pytest.raises(TrainingConfigError, match="does not exist"):
        train_transfer(**FAST, resume_from_checkpoint=str(tmp_path / "checkpoints" / "step_9"),
                       output_dir=str(tmp_path))  # fmt: skip
    (tmp_path / "not-a-checkpoint").mkdir()
    with pytest.raises(TrainingConfigError, match="not a complete masterkey checkpoint"):
        train_transfer(**FAST, resume_from_checkpoint=str(tmp_path / "not-a-checkpoint"), output_dir=str(tmp_path))


def test_an_output_dir_with_another_runs_results_is_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"final": {"accuracy": 0.9}}))
    (tmp_path / "run_config.json").write_text(json.dumps({"model": "convnext_atto", "learning_rate": 0.1}))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrainingConfigError, match=r"holds another run's results.*model: 'convnext_atto' there"):
        train_transfer(**FAST, output_dir=str(tmp_path))
    # --overwrite_output_dir replaces the run's files and nothing else
    from masterkey.training.outputs import check_output_dir, claim_output_dir

    assert check_output_dir(tmp_path, {"model": "x"}, overwrite=True, resume=None, checkpoint=None)
    claim_output_dir(tmp_path, {"model": "x"}, clear=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run_config.json"]


def test_push_to_hub_while_offline_is_refused_before_training(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrainingConfigError, match="HF_HUB_OFFLINE"):
        parse_args(["--push_to_hub"])


def test_public_names():
    assert masterkey.train_transfer is train_transfer
    assert masterkey.load_image_dataset is load_image_dataset
    assert masterkey.BUILTIN_DATASETS is BUILTIN_DATASETS


def test_push_to_hub_uploads_the_model_folder_only(tmp_path, monkeypatch):
    import huggingface_hub

    import masterkey.hub
    from masterkey.hub import push_folder
    from masterkey.training.outputs import PUSH_IGNORE_PATTERNS

    calls = {}

    class FakeApi:
        def __init__(self, token=None, **kwargs):
            calls["token"] = token

        def create_repo(self, repo_id, exist_ok=False, **kwargs):
            calls["create"] = (repo_id, exist_ok)
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(masterkey.hub, "HfApi", FakeApi)
    # the real Hub's endpoint (conftest points HF_ENDPOINT at the loopback server, which RepoUrl would show instead)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://huggingface.co")
    # the one Hub upload of masterkey, with the patterns a transfer run gives it
    assert push_folder(tmp_path, "org/lite0-animals", token="t", ignore_patterns=PUSH_IGNORE_PATTERNS) == (
        "https://huggingface.co/org/lite0-animals"
    )
    assert calls["create"] == ("org/lite0-animals", True) and calls["token"] == "t"
    upload = calls["upload"]
    assert upload["repo_id"] == "org/lite0-animals" and upload["folder_path"] == str(tmp_path)
    assert {"checkpoints/**", "logs/**", "run_config.json"} <= set(upload["ignore_patterns"])


def test_universal_keys_fitted_to_any_bank(tmp_path):
    """``--filters universal-<bank>``: the 8 learned keys fitted to any bank (here a saved folder), frozen."""
    import timm

    from masterkey.extract import extract_filters, find_depthwise_convs
    from masterkey.training.filters import resolve_filters

    source = timm.create_model("mobilenetv3_small_050", num_classes=10)
    extract_filters(source).save_pretrained(tmp_path / "bank")
    target = timm.create_model("mobilenetv3_small_050", num_classes=10)
    resolved = resolve_filters(f"universal-{tmp_path / 'bank'}", target)
    assert resolved.spec == f"universal-{tmp_path / 'bank'}" and len(resolved.bank) == len(find_depthwise_convs(source))
    resolved.apply(target, strict=True, freeze=True, trainable="all-but-depthwise", mapping="exact")
    convs = find_depthwise_convs(target)
    assert convs and not any(c.module.weight.requires_grad for c in convs)
    # the 3x3 kernels are affine images of the 8 keys, so they are no longer the source's random kernels
    assert not all(
        np.allclose(c.module.weight.detach().numpy(), resolved.bank[c.name].numpy()) for c in convs
    )
    with pytest.raises(MasterKeyError, match="universal-<bank>"):
        resolve_filters(f"universal-{tmp_path / 'no-bank'}", target)


def test_a_new_head_starts_at_zero_so_every_arm_starts_at_chance():
    import math

    import timm
    import torch

    from masterkey.training.run import _zero_new_head

    model = timm.create_model("tf_efficientnet_lite0", num_classes=10).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    before = torch.nn.functional.cross_entropy(model(x), y).item()
    _zero_new_head(model, pretrained=False, num_labels=10)
    after = torch.nn.functional.cross_entropy(model(x), y).item()
    assert after == pytest.approx(math.log(10), abs=1e-5) and abs(before - math.log(10)) > 0.1
    kept = timm.create_model("tf_efficientnet_lite0")
    kept.pretrained_cfg = {**kept.pretrained_cfg, "num_classes": 1000}
    weight = kept.get_classifier().weight.clone()
    _zero_new_head(kept, pretrained=True, num_labels=1000)  # a pretrained head with the same classes stays
    assert torch.equal(kept.get_classifier().weight, weight)


def test_loader_workers_default_by_device_and_an_explicit_number_wins(monkeypatch):
    from types import SimpleNamespace

    import torch

    from masterkey.training import make_config
    from masterkey.training.run import GPU_LOADER_WORKERS, _loader_workers

    cpu = SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    gpu = SimpleNamespace(device=torch.device("cuda", 0), num_processes=2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert _loader_workers(make_config(), cpu) == 1
    assert _loader_workers(make_config(), gpu) == GPU_LOADER_WORKERS == 8  # 16 cores, 2 processes
    assert _loader_workers(make_config(dataloader_num_workers=3), gpu) == 3
