"""benchmarks/keep_run_records.py: the records of a planned experiment's finished runs, kept beside its committed
results part way and restored into a fresh outputs folder, on the real committed records of the cross-family pilot."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
    source = outputs / "regime" / "sources" / "net"  # a source network: its weights are not committed
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
