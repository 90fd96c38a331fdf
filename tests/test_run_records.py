"""benchmarks/keep_run_records.py: the records of a planned experiment's finished runs, kept beside its committed
results part way and restored into a fresh outputs folder, on the real committed records of the cross-family pilot."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from masterkey.errors import TrainingConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "keep_run_records.py"
PILOT_RUNS = ROOT / "docs" / "experiments" / "cross-family" / "regime" / "runs"


def _keep(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=True)


def test_finished_runs_are_kept_updated_when_trained_again_and_restored_without_overwriting(tmp_path):
    outputs, kept = tmp_path / "outputs", tmp_path / "docs"
    shutil.copytree(PILOT_RUNS, outputs / "regime" / "runs")
    finished = sorted(p.name for p in PILOT_RUNS.iterdir())
    assert len(finished) == 12
    training = outputs / "regime" / "runs" / "still-training__seed1"  # checkpoints, no results.json yet
    (training / "checkpoints" / "epoch_0").mkdir(parents=True)
    (training / "run_config.json").write_text("{}")
    source = outputs / "regime" / "sources" / "net"  # a source network whose bank is not extracted yet
    source.mkdir(parents=True)
    for name in ("results.json", "run_config.json", "model.safetensors"):
        (source / name).write_text("{}")

    assert _keep(outputs, kept).stdout.endswith("12 added, 0 updated (%s -> %s)\n" % (outputs, kept))
    assert sorted(p.name for p in (kept / "regime" / "runs").iterdir()) == finished
    assert not (kept / "regime" / "sources").exists()
    one = kept / "regime" / "runs" / finished[0]
    assert sorted(p.name for p in one.iterdir()) == ["results.json", "run_config.json"]  # records, no checkpoints
    assert (one / "results.json").read_bytes() == (PILOT_RUNS / finished[0] / "results.json").read_bytes()
    assert _keep(outputs, kept).stdout.startswith("0 added, 0 updated")  # nothing new: nothing to commit

    # the run trained again (another record): the kept one follows it
    again = outputs / "regime" / "runs" / finished[0] / "results.json"
    record = json.loads(again.read_text())
    record["train_time_s"] += 1.0
    again.write_text(json.dumps(record))
    assert f"updated: regime/runs/{finished[0]}" in _keep(outputs, kept).stdout

    # a fresh clone: the kept records come back; a run in outputs is never overwritten
    fresh = tmp_path / "fresh"
    (fresh / "regime" / "runs" / finished[1]).mkdir(parents=True)
    (fresh / "regime" / "runs" / finished[1] / "run_config.json").write_text('{"mine": true}')
    assert "11 added" in _keep("--restore", kept, fresh).stdout
    assert (fresh / "regime" / "runs" / finished[1] / "run_config.json").read_text() == '{"mine": true}'
    assert not (fresh / "regime" / "runs" / finished[1] / "results.json").exists()
    assert json.loads((fresh / "regime" / "runs" / finished[0] / "results.json").read_text()) == record


def test_an_experiment_kept_by_its_records_and_source_banks_resumes_in_a_fresh_clone_without_training(tmp_path):
    """source-size's runs and source networks kept (records and banks, no weights), its outputs deleted as in a fresh
    clone: restored, --resume trains nothing and reads back every run with its accuracy. The layer split uses its
    source networks' weights (the pointwise control): they are kept too; without them its source trains again, to the
    same bytes on this machine, so the runs that use it are read back."""
    from masterkey.research.experiments import run_experiment

    outputs, kept = tmp_path / "outputs", tmp_path / "docs"
    first = run_experiment("source-size", scale="quick", seeds=[0], out_dir=outputs)
    sources = sorted(p.name for p in (outputs / "source-size" / "sources").iterdir())
    assert len(sources) == 3
    assert f"{len(first['runs']) + 3} added" in _keep(outputs, kept).stdout
    bank = kept / "source-size" / "sources" / sources[0] / "bank-all"
    assert sorted(p.name for p in bank.parent.iterdir()) == ["bank-all", "results.json", "run_config.json"]
    assert json.loads((bank / "config.json").read_text())["source_sha256"] == json.loads(
        (bank.parent / "results.json").read_text())["weights_sha256"]  # fmt: skip
    shutil.rmtree(outputs)
    assert f"{len(first['runs']) + 3} added" in _keep("--restore", kept, outputs).stdout
    again = run_experiment("source-size", scale="quick", seeds=[0], out_dir=outputs, resume=True)
    assert again["reused_runs"] == len(first["runs"]) + 3  # nothing trained
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in first["runs"]]
    assert not list((outputs / "source-size" / "sources").glob("*/model.safetensors"))
    # a kept bank that does not come from the weights its record names is refused, never used
    config = json.loads((bank / "config.json").read_text())
    (outputs / "source-size" / "sources" / sources[0] / "bank-all" / "config.json").write_text(
        json.dumps({**config, "source_sha256": "0" * 64}))  # fmt: skip
    with pytest.raises(TrainingConfigError, match="has neither its weights .* nor a bank extracted from the weights"):
        run_experiment("source-size", scale="quick", seeds=[0], out_dir=outputs, resume=True)

    split = {"split_arms": ["AnB"], "scale": {"name": "quick", "seeds": [0]}}
    first = run_experiment("layer-split", split, out_dir=outputs)
    _keep(outputs, kept)
    network = Path("layer-split") / "sources" / "tf_efficientnet_lite0-animal-mnist-A"
    assert (kept / network / "model.safetensors").read_bytes() == (outputs / network / "model.safetensors").read_bytes()
    shutil.rmtree(outputs / "layer-split")
    _keep("--restore", kept, outputs)
    again = run_experiment("layer-split", split, out_dir=outputs, resume=True)
    assert again["reused_runs"] == len(first["runs"]) + 1  # nothing trained: the network's weights were kept
    # without its weights the network trains again, to the same bytes on this machine: its runs are read back
    (outputs / network / "model.safetensors").unlink()
    third = run_experiment("layer-split", split, out_dir=outputs, resume=True)
    assert third["reused_runs"] == len(first["runs"])
    assert (outputs / network / "model.safetensors").read_bytes() == (kept / network / "model.safetensors").read_bytes()
    assert [r["accuracy"] for r in third["runs"]] == [r["accuracy"] for r in first["runs"]]
