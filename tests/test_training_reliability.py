"""Transfer training when things go wrong: real runs (tiny models, a few steps, offline), no mocks.

- non-finite options are refused at configuration time; a run that diverges stops at once, naming the step, keeps
  its last good checkpoint and writes no model or results;
- a run killed mid-epoch and resumed ends with bitwise the weights of an uninterrupted run (DataLoader workers on);
- ``--checkpoints_total_limit`` keeps the newest checkpoints and is not part of the run's identity;
- a broken image is found before the first step (even one a ``drop_last`` run would never read), in one line;
- a one-class image folder says so;
- ``--push_to_hub`` without a token fails before anything is loaded or written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
from accelerate import Accelerator
from conftest import kill_at_checkpoint, run_example
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from masterkey.errors import DatasetError, HubError, TrainingConfigError
from masterkey.training import LoopState, load_image_dataset, parse_args, prepare_splits, train_transfer, training_loop
from masterkey.training.data import ImageClassificationDataset, timm_transforms
from masterkey.training.loop import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "transfer.py"
FAST = dict(model="mobilenetv3_small_050", dataset_name="digits", resolution=32, filters="none", cpu_threads=1,
            dataloader_num_workers=0)  # fmt: skip


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


# -- non-finite training ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [["--learning_rate", "inf"], ["--learning_rate", "nan"], ["--weight_decay", "nan"], ["--weight_decay", "inf"],
     ["--train_val_split", "nan"], ["--crop_scale", "0.5", "nan"]],
)  # fmt: skip
def test_non_finite_options_are_refused_at_configuration_time(argv):
    with pytest.raises(TrainingConfigError, match=rf"--{argv[0][2:]} must be a finite number, got (inf|nan)"):
        parse_args(argv)


def test_a_diverging_run_stops_at_once_and_keeps_its_last_good_checkpoint(tmp_path):
    """A huge but finite learning rate: the first steps' updates are finite (the first only moves the zero head), the
    third step's weights are not."""
    out = tmp_path / "run"
    start = time.monotonic()
    with pytest.raises(TrainingConfigError) as caught:
        train_transfer(**FAST, max_train_samples=64, max_eval_samples=16, per_device_train_batch_size=8,
                       num_train_epochs=2, learning_rate=1e30, checkpointing_steps=1, output_dir=str(out))  # fmt: skip
    message = str(caught.value)
    assert message.startswith("Training diverged: ") and "weight tensors became non-finite at step 3 of 16 (epoch 0" in message
    last = out / "checkpoints" / "step_2"
    assert f"The last checkpoint, {last}, holds the weights from before and is kept" in message
    assert "Lower --learning_rate" in message and len(message.splitlines()) == 1
    assert time.monotonic() - start < 120  # stopped at step 3 of 16, not after the run
    # nothing of the diverged weights was saved: no model, no results, no checkpoint after the last good one
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "run_config.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1", "step_2"]
    assert all(all_finite(weights(out / "checkpoints" / name)) for name in ("step_1", "step_2"))


def test_a_poisoned_batch_stops_the_loop_before_anything_non_finite_is_saved(tmp_path):
    """The loop itself, on batches of our own: huge (finite) pixels keep the loss finite but overflow a BatchNorm's
    running variance; infinite pixels make the loss non-finite. Neither reaches a checkpoint."""
    for poison, expected in ((1e30, "weight tensors became non-finite at step 3"), (math.inf, "loss became nan")):
        torch.manual_seed(0)
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(4, 2))  # fmt: skip
        batches = [{"pixel_values": torch.randn(4, 3, 8, 8), "labels": torch.tensor([0, 1, 0, 1])} for _ in range(5)]
        batches[2]["pixel_values"][0, 0, 0, 0] = poison  # the third batch: step 3
        accelerator = Accelerator(cpu=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        loader = DataLoader(batches, batch_size=None)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
        state = LoopState(max_steps=5, num_epochs=1)
        folder = tmp_path / f"checkpoints-{poison}"

        def save(name, state=state, folder=folder):
            save_checkpoint(accelerator, folder / name, state.to_dict({}))
            state.last_checkpoint = str(folder / name)

        with pytest.raises(TrainingConfigError, match=expected) as caught:
            training_loop(accelerator, model, optimizer, scheduler, loader, state, checkpointing_steps=1,
                          on_checkpoint=save, progress=False)  # fmt: skip
        assert "step_2" in str(caught.value) and state.history == []
        assert sorted(p.name for p in folder.iterdir()) == ["step_1", "step_2"]
        assert all(all_finite(weights(folder / name)) for name in ("step_1", "step_2"))


# -- exact resume ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(offline_env):
    return offline_env


def run_script(args, env, *, timeout=300):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_the_augmentation_depends_on_seed_epoch_and_row_only():
    """The same example gets the same crop in any batch, any order, any process; another epoch gets another."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(6)]
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 3},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("int64")}))  # fmt: skip
    train_tf, _, _ = timm_transforms(timm.create_model("mobilenetv3_small_050", num_classes=2), 16,
                                     crop_scale=(0.08, 1.0))  # fmt: skip
    ds = ImageClassificationDataset(split, image_column="image", label_column="label", transform=train_tf, seed=7,
                                    row_ids=[10, 11, 12, 13, 14, 15])  # fmt: skip
    before = torch.get_rng_state()
    first = {item["ids"]: item["pixel_values"] for item in ds.__getitems__([0, 1, 2, 3, 4, 5])}
    assert torch.equal(torch.get_rng_state(), before)  # the process's own generator is left as it was
    torch.manual_seed(123)  # whatever state the reading process is in
    again = {item["ids"]: item["pixel_values"] for item in ds.__getitems__([5, 3, 1])}
    assert all(torch.equal(again[row], first[row]) for row in again)
    # and in a DataLoader worker process
    loader = DataLoader(ds, batch_size=2, num_workers=1)
    worker = {int(i): p for batch in loader for i, p in zip(batch["ids"], batch["pixel_values"])}
    assert all(torch.equal(worker[row], first[row]) for row in first)
    ds.set_epoch(1)
    later = {item["ids"]: item["pixel_values"] for item in ds.__getitems__([0, 1, 2, 3, 4, 5])}
    assert sum(torch.equal(later[row], first[row]) for row in first) < 6  # epoch 1 draws other crops


def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(env, tmp_path):
    """2 epochs of 12 steps with a DataLoader worker and random crops, a checkpoint every step; SIGKILL mid-epoch 0,
    then --resume_from_checkpoint latest: bitwise the weights of the same run without the kill."""
    args = ["--model", "mobilenetv3_small_050", "--filters", "none", "--dataset_name", "digits", "--resolution", "32",
            "--max_train_samples", "96", "--max_eval_samples", "16", "--per_device_train_batch_size", "8",
            "--num_train_epochs", "2", "--checkpointing_steps", "1", "--checkpoints_total_limit", "3",
            "--dataloader_num_workers", "1", "--cpu_threads", "1", "--crop_scale", "0.3", "1.0",
            "--log_sample_ids"]  # fmt: skip
    killed = tmp_path / "killed"
    kill_at_checkpoint([sys.executable, str(SCRIPT), *args, "--output_dir", str(killed)],
                       checkpoint=killed / "checkpoints" / "step_3", env=env, cwd=ROOT)

    run_script([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"], env)
    reference = tmp_path / "reference"
    run_script([*args, "--output_dir", str(reference)], env)

    resumed = json.loads((killed / "results.json").read_text())
    full = json.loads((reference / "results.json").read_text())
    step = resumed["resumed_from"]["step"]
    assert 3 <= step < 12, step  # resumed in epoch 0
    assert resumed["completed_steps"] == full["completed_steps"] == 24
    got, want = weights(killed), weights(reference)
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"{len(different)} of {len(want)} tensors differ after resuming at step {step}"
    assert resumed["epochs_history"][-1]["accuracy"] == full["epochs_history"][-1]["accuracy"]
    assert resumed["epochs_history"][-1]["eval_loss"] == full["epochs_history"][-1]["eval_loss"]
    # log_sample_ids: the batches after the resume marker are the reference's from that step on
    records = [json.loads(line) for line in (killed / "sample_ids.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "sample_ids.jsonl").read_text().splitlines()]
    after = records[records.index({"resumed_from_step": step}) + 1 :]
    assert after == expected[len(expected) - len(after) :]
    assert (after[0]["epoch"], after[0]["batch"]) == (0, step)  # from the batch right after the checkpoint
    # --checkpoints_total_limit 3 held across the kill and the resume
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step_22", "step_23", "step_24"]


# -- checkpoints_total_limit -----------------------------------------------------------------------------------------
def test_checkpoints_total_limit_keeps_the_newest_and_does_not_block_a_resume(tmp_path):
    out = tmp_path / "run"
    stray = out / "checkpoints" / "step_99.tmp"  # a save a kill interrupted: never counted, never deleted
    stray.mkdir(parents=True)
    (stray / "masterkey_state.json").write_text("{}")
    options = dict(**FAST, max_train_samples=24, max_eval_samples=8, per_device_train_batch_size=8,
                   num_train_epochs=2, checkpointing_steps=1, output_dir=str(out))  # fmt: skip
    train_transfer(**options, checkpoints_total_limit=2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_5", "step_6", "step_99.tmp"]
    # another limit is the same run: resuming from a checkpoint of it is allowed, and the new limit applies
    results = train_transfer(**options, checkpoints_total_limit=1,
                             resume_from_checkpoint=str(out / "checkpoints" / "step_5"))  # fmt: skip
    assert results["resumed_from"]["step"] == 5 and results["completed_steps"] == 6
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_6", "step_99.tmp"]
    assert "checkpoints_total_limit" not in json.loads((out / "run_config.json").read_text())
    with pytest.raises(SystemExit):
        parse_args(["--checkpoints_total_limit", "0"])


# -- broken images ---------------------------------------------------------------------------------------------------
def write_folder(root: Path, classes=("cat", "dog"), per_class=(5, 2)) -> None:
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "validation"), per_class):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.integers(0, 90, (20, 20, 3)) + 100 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def folder_options(root: Path, out: Path, **extra):
    return {**dict(model="mobilenetv3_small_050", filters="none", resolution=32, cpu_threads=1,
                   train_dir=str(root / "train"), validation_dir=str(root / "validation"),
                   per_device_train_batch_size=4, checkpointing_steps=1, output_dir=str(out)), **extra}  # fmt: skip


def test_a_truncated_image_is_found_before_the_first_step_in_one_line(tmp_path, capsys):
    write_folder(tmp_path / "data")
    bad = tmp_path / "data" / "train" / "dog" / "3.png"
    truncate(bad)
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as caught:
        train_transfer(**folder_options(tmp_path / "data", out, dataloader_num_workers=1, num_train_epochs=1))
    message = str(caught.value)
    assert message.startswith(f"The image file {str(bad)!r} (row ") and "of the train split" in message
    assert "cannot be decoded" in message and "Remove or replace the file" in message
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert not (out / "checkpoints").exists()  # not a single step
    # the command line: one line on stderr, exit 2
    code = run_example([*[x for k, v in folder_options(tmp_path / "data", tmp_path / "cli", num_train_epochs=1).items()
                   for x in (f"--{k}", str(v))]])  # fmt: skip
    err = capsys.readouterr().err  # datasets' progress bars, then the error
    (line,) = [line for line in err.splitlines() if line.startswith("transfer.py: error:")]
    assert code == 2 and str(bad) in line and "Traceback" not in err and err.rstrip().endswith(line)
    # in the evaluation split too, although evaluation comes only after an epoch
    write_folder(tmp_path / "data2")
    bad_eval = tmp_path / "data2" / "validation" / "cat" / "1.png"
    truncate(bad_eval)
    with pytest.raises(DatasetError, match=r"row \d+ of the validation split"):
        train_transfer(**folder_options(tmp_path / "data2", tmp_path / "run2", dataloader_num_workers=0))
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_a_truncated_image_that_drop_last_would_never_read_is_still_found(tmp_path):
    """9 training images in batches of 8: one is left out of the only epoch. Make that one broken."""
    write_folder(tmp_path / "data", per_class=(5, 2))
    root = tmp_path / "data"
    options = folder_options(root, tmp_path / "control", num_train_epochs=1, per_device_train_batch_size=8,
                             dataloader_num_workers=0, log_sample_ids=True)  # fmt: skip
    (root / "train" / "dog" / "4.png").unlink()  # 9 images
    train_transfer(**options)
    read = {i for line in (tmp_path / "control" / "sample_ids.jsonl").read_text().splitlines()
            for i in json.loads(line).get("ids", []) if "batch" in json.loads(line)}  # fmt: skip
    splits = prepare_splits(load_image_dataset(train_dir=root / "train", validation_dir=root / "validation"))
    paths = [item["path"] for item in splits.train.cast_column("image", datasets.Image(decode=False))["image"]]
    (never,) = set(range(9)) - read
    truncate(Path(paths[never]))
    with pytest.raises(DatasetError, match=rf"The image file {paths[never]!r} \(row {never} of the train split"):
        train_transfer(**{**options, "output_dir": str(tmp_path / "run")})
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- one class -------------------------------------------------------------------------------------------------------
def test_a_one_class_image_folder_says_so(tmp_path):
    write_folder(tmp_path / "data", classes=("cat",))
    with pytest.raises(DatasetError, match=r"needs at least 2 classes, found 1 \(cat\)"):
        train_transfer(**folder_options(tmp_path / "data", tmp_path / "run", dataloader_num_workers=0))
    with pytest.raises(DatasetError, match=r"needs at least 2 classes, found 1 \(cat\)"):
        prepare_splits(load_image_dataset(str(tmp_path / "data")))  # the folder given as --dataset_name
    labelled = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8))] * 4, "label": ["cat"] * 4},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    with pytest.raises(DatasetError, match=r"needs at least 2 classes, found 1 \(cat\) in column 'label'"):
        prepare_splits(datasets.DatasetDict(train=labelled), train_val_split=0.5)


# -- push_to_hub -----------------------------------------------------------------------------------------------------
@pytest.fixture
def no_token(tmp_path, monkeypatch):
    """No Hugging Face token anywhere, the Hub on."""
    from huggingface_hub import constants

    home = tmp_path / "empty-hf-home"
    home.mkdir()
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported: point its constants there too
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_push_to_hub_without_a_token_fails_before_any_work(tmp_path, no_token):
    out = tmp_path / "run"
    start = time.monotonic()
    with pytest.raises(HubError, match="no Hugging Face token"):
        train_transfer(**FAST, max_train_samples=16, num_train_epochs=1, output_dir=str(out), push_to_hub=True,
                       hub_model_id="org/digits-run")  # fmt: skip
    assert time.monotonic() - start < 5 and not out.exists()  # nothing loaded, nothing written
    # both runs of a comparison are checked before the first trains; an invalid repo id, even with a token
    with pytest.raises(HubError, match="no Hugging Face token"):
        train_transfer(**{**FAST, "filters": "random"}, compare_with_scratch=True, output_dir=str(out),
                       push_to_hub=True)  # fmt: skip
    with pytest.raises(HubError, match="not a valid Hub repo id"):
        train_transfer(**FAST, output_dir=str(out), push_to_hub=True, hub_model_id="org/bad name!",
                       hub_token="hf_x")  # fmt: skip
    assert not out.exists()
