"""The typed record of a run: training writes results.json through it, in the shape runs have always written, and
everything that reads runs reads them through it."""

import json

import pytest

from masterkey._timm import sha256_file
from masterkey.errors import ResultsFormatError
from masterkey.research.experiments import learning_check
from masterkey.training import FinalMetrics, RunResults, train_transfer

FAST = dict(model="mobilenetv3_small_050", dataset_name="digits", resolution=32, filters="none", cpu_threads=1,
            max_train_steps=2, max_train_samples=32, max_eval_samples=32, per_device_train_batch_size=16,
            disable_tqdm=True)  # fmt: skip

#: results.json's top-level keys, in the order runs wrote them before the typed record existed (then weights_sha256).
KEYS = ["output_dir", "model", "resolution", "final", "epochs_history", "completed_steps", "max_steps", "epochs",
        "resumed_from", "train_time_s", "train_samples_per_second", "data_wait_share", "train_samples_seen",
        "parameters", "filters", "dataset", "wall_time_s", "num_processes", "device", "cpu_threads_per_process",
        "mixed_precision", "optimizer", "compile_time_s", "data_config", "config", "versions",
        "weights_sha256"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    returned = train_transfer(output_dir=str(out), **FAST)
    return out, returned


def test_training_writes_results_json_through_the_record_in_its_usual_shape(run):
    out, returned = run
    written = json.loads((out / "results.json").read_text())
    assert list(written) == KEYS and written == returned
    assert list(written["final"]) == ["accuracy", "top5_accuracy", "eval_loss", "train_loss", "num_eval_examples"]
    assert list(written["parameters"]) == ["trainable", "total", "trainable_percent"]
    record = RunResults.from_json(out / "results.json")
    assert record.to_dict() == written  # a lossless round trip
    assert record.final.accuracy == written["final"]["accuracy"] and record.num_labels == 10
    assert record.accuracy_history == [e["accuracy"] for e in written["epochs_history"]]
    assert record.eval_split == written["dataset"]["eval_split"]
    assert learning_check(record) == learning_check(written)
    assert written["weights_sha256"] == sha256_file(out / "model.safetensors")  # what a run using its filters records


def test_older_results_read_back_and_broken_ones_are_typed_errors(run):
    _, returned = run
    older = {k: v for k, v in returned.items() if k not in ("compile_time_s", "data_wait_share", "train_samples_seen")}
    record = RunResults.from_dict(older)
    assert record.compile_time_s is None and record.final == FinalMetrics(**returned["final"])
    with pytest.raises(ResultsFormatError, match="not a masterkey results.json"):
        RunResults.from_dict({"model": "x"})
    with pytest.raises(ResultsFormatError, match="no final accuracy"):
        RunResults.from_dict({**returned, "final": {"accuracy": None}})
    # keys a later version may add are ignored, not refused
    assert RunResults.from_dict({**returned, "surprise": 1}).to_dict() == returned
