"""Several independent source networks per trained bank: each serves its share of the seeds, the runs record it, and
every interval built on them spans sources as well as seeds; the controls of source-size; how fast each arm gets to
where from scratch ends."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from masterkey.errors import TrainingConfigError
from masterkey.research.experiments import (
    SCALES,
    ExperimentConfig,
    layer_steps,
    run_experiment,
    steps_to_reach,
    summarize,
    time_to_reach,
    time_to_reach_table,
)
from masterkey.research.intervals import paired_difference
from masterkey.research.plans import AnalysisPlan, confirmatory_contrasts, mark_exploratory


def test_seeds_are_dealt_out_over_the_source_networks_in_turn():
    scale = replace(SCALES["quick"], seeds=(1, 2, 3, 4, 5), source_seeds=(7, 8))
    assert scale.source_groups() == [(7, (1, 3, 5)), (8, (2, 4))]
    assert scale.source_groups([9]) == [(7, (9,))]  # a source with no seed left trains nothing
    assert SCALES["quick"].source_groups() == [(0, (0, 1, 2))]  # one network: the scale's source_seed
    config = ExperimentConfig.from_dict({"scale": {"name": "quick", "source_seeds": [3, 4]}})
    assert config.scale.source_seeds == (3, 4)
    with pytest.raises(TrainingConfigError, match="repeat a seed"):
        ExperimentConfig.from_dict({"scale": {"name": "quick", "source_seeds": [3, 3]}})


def test_the_interval_over_sources_is_the_t_interval_of_the_per_source_means():
    differences = [0.02, 0.04, 0.01, 0.05, 0.03, 0.00]
    sources = [7, 8, 9, 7, 8, 9]
    clustered = paired_difference(differences, clusters=sources)
    means = np.array([np.mean([d for d, s in zip(differences, sources) if s == k]) for k in (7, 8, 9)])
    half = stats.t.ppf(0.975, 2) * means.std(ddof=1) / math.sqrt(3)
    assert clustered["sources"] == 3 and clustered["pairs"] == 6
    assert clustered["mean"] == pytest.approx(means.mean())
    assert (clustered["low"], clustered["high"]) == pytest.approx((means.mean() - half, means.mean() + half))
    # seeds alone would claim far more certainty: 5 degrees of freedom over the same six numbers
    plain = paired_difference(differences)
    assert plain["high"] - plain["low"] < clustered["high"] - clustered["low"] and "sources" not in plain
    assert plain["p"] == pytest.approx(stats.ttest_1samp(differences, 0.0).pvalue)
    # one source: the interval is over seeds, and says it spans one source only
    assert paired_difference(differences, clusters=[7] * 6)["sources"] == 1
    assert paired_difference(differences, clusters=[7] * 6)["low"] == pytest.approx(plain["low"])


def _record(label, seed, accuracy, *, source=None, group="g", history=None):
    record = {"group": group, "label": label, "x": None, "seed": seed, "dataset": "d", "model": "m",
              "filters": "none" if label == "from scratch" else label, "accuracy": accuracy, "chance": 0.1,
              "history": history, "steps": 100 if history else None, "train_time_s": 50.0}  # fmt: skip
    if source is not None:
        record["source_seed"] = source
    return record


def test_summaries_and_primary_contrasts_cluster_by_source_and_the_plan_names_its_sources():
    gains = {0: (7, 0.02), 1: (8, 0.06), 2: (7, 0.03), 3: (8, 0.05), 4: (9, 0.04), 5: (9, 0.04)}
    records = [_record("from scratch", seed, 0.80) for seed in gains]
    records += [_record("bank", seed, 0.80 + gain, source=source) for seed, (source, gain) in gains.items()]
    bank = summarize(records)[1]["vs_scratch"]
    expected = paired_difference([g for _, g in gains.values()], clusters=[s for s, _ in gains.values()])
    assert bank["sources"] == 3 and bank["low"] == pytest.approx(expected["low"])
    plan = AnalysisPlan.from_dict({"experiment": "transfer-matrix", "seeds": list(gains), "sources": [7, 8],
                                   "primary": [{"name": "bank - scratch", "a": ["g", "bank"],
                                                "b": ["g", "from scratch"]}]})  # fmt: skip
    (row,) = confirmatory_contrasts(records, plan)
    # source 9 is not the plan's: its runs are left out and marked exploratory, and the contrast is incomplete
    assert row["pairs"] == 4 and row["sources"] == 2 and not row["complete"] and not row["holds"]
    marked = mark_exploratory(records, plan)
    assert {r["seed"] for r in marked if r["exploratory"]} == {4, 5}
    with pytest.raises(TrainingConfigError, match="'sources' must be a list of integers"):
        AnalysisPlan.from_dict({**json.loads(json.dumps({"experiment": "x", "seeds": [1], "primary": []})),
                                "sources": ["a"]})  # fmt: skip


def test_steps_to_reach_interpolates_between_epoch_ends():
    assert steps_to_reach([0.5, 0.8, 0.9], 300, 0.85) == pytest.approx(250.0)
    assert steps_to_reach([0.5, 0.8, 0.9], 300, 0.3, chance=0.1) == pytest.approx(50.0)  # within the first epoch
    assert steps_to_reach([0.5, 0.8, 0.9], 300, 0.95) is None
    assert steps_to_reach([0.5, None, 0.9], 300, 0.7) == pytest.approx(100 + 0.2 / 0.4 * 200)  # a missing epoch


def test_time_to_reach_pairs_each_run_with_scratchs_final_accuracy_by_seed():
    curves = {0: ([0.5, 0.7, 0.8, 0.9], [0.8, 0.9, 0.92, 0.93]), 1: ([0.4, 0.6, 0.8, 0.88], [0.7, 0.88, 0.9, 0.9]),
              2: ([0.5, 0.7, 0.85, 0.9], [0.6, 0.7, 0.8, 0.85])}  # seed 2: the bank never gets to 0.9
    records = []
    for seed, (scratch, bank) in curves.items():
        records += [_record("from scratch", seed, scratch[-1], history=scratch),
                    _record("bank", seed, bank[-1], history=bank)]  # fmt: skip
    (row,) = time_to_reach(records)
    assert (row["group"], row["label"], row["reached"], row["n"]) == ("g", "bank", 2, 3)
    # seed 0: the bank reaches 0.9 at the end of epoch 2 (step 50), scratch at the end of epoch 4 (step 100)
    # seed 1: the bank reaches 0.88 at the end of epoch 2 (step 50), scratch at 100
    assert row["steps_mean"] == pytest.approx(50.0) and row["seconds_mean"] == pytest.approx(25.0)
    assert row["epochs_mean"] == pytest.approx(2.0) and row["share_of_scratch"]["mean"] == pytest.approx(0.5)
    table = time_to_reach_table([row])
    assert "| g | bank | 2/3 | 2.0 | 50 | 25 | 0.50 [0.50, 0.50] |" in table and time_to_reach_table([]) == ""
    # records written before runs recorded their steps: the same measure in epochs, the steps left blank
    (older,) = time_to_reach([{k: v for k, v in r.items() if k != "steps"} for r in records])
    assert older["steps_mean"] is None and older["epochs_mean"] == pytest.approx(2.0)
    assert older["share_of_scratch"] == row["share_of_scratch"] and older["seconds_mean"] == row["seconds_mean"]
    assert "| g | bank | 2/3 | 2.0 |  | 25 | 0.50 [0.50, 0.50] |" in time_to_reach_table([older])


def test_layer_steps_take_the_configs_choice_or_the_scales_groups():
    full = ExperimentConfig.from_dict({"scale": "full"})
    assert layer_steps(full, 16) == [1, 4, 8, 12, 16]
    assert layer_steps(ExperimentConfig.from_dict({"scale": "full", "split_layers": [16, 8]}), 16) == [8, 16]
    with pytest.raises(TrainingConfigError, match=r"split_layers \[17\] lie outside 1..16"):
        layer_steps(ExperimentConfig.from_dict({"scale": "full", "split_layers": [8, 17]}), 16)


def test_layer_split_trains_one_network_pair_per_source_and_pairs_each_run_with_its_source(tmp_path):
    config = {"split_arms": ["AnB"], "split_layers": [2],
              "scale": {"name": "quick", "seeds": [0, 1, 2, 3], "source_seeds": [41, 42]}}  # fmt: skip
    results = run_experiment("layer-split", config, out_dir=tmp_path)
    sources = sorted(p.name for p in (tmp_path / "layer-split" / "sources").iterdir())
    assert sources == ["tf_efficientnet_lite0-animal-mnist-A__source41", "tf_efficientnet_lite0-animal-mnist-A__source42"]
    for name, seed in zip(sources, (41, 42)):
        trained = json.loads((tmp_path / "layer-split" / "sources" / name / "results.json").read_text())
        assert trained["config"]["seed"] == seed
    copied = [r for r in results["runs"] if r["group"] != "from scratch on B"]
    assert {(r["seed"], r["source_seed"]) for r in copied} == {(0, 41), (1, 42), (2, 41), (3, 42)}
    for r in copied:  # each run froze the layers of its own source network
        assert f"__source{r['source_seed']}" in str(r["filters"])
    assert all("source_seed" not in r for r in results["runs"] if r["group"] == "from scratch on B")
    (contrast,) = results["contrasts"]
    assert contrast["sources"] == 2 and contrast["pairs"] == 4
    runs = {(r["group"], r["seed"]): r for r in results["runs"]}
    differences = [runs["AnB depthwise", s]["accuracy"] - runs["AnB pointwise", s]["accuracy"] for s in range(4)]
    assert contrast["low"] == pytest.approx(paired_difference(differences, clusters=[41, 42, 41, 42])["low"])


def test_source_size_has_a_positive_and_a_negative_control_beside_the_shares(tmp_path):
    config = {"source_size_controls": ["bank", "random"], "scale": {"name": "quick", "seeds": [0, 1]}}
    results = run_experiment("source-size", config, out_dir=tmp_path)
    labels = list(dict.fromkeys(r["label"] for r in results["runs"]))
    assert labels[:3] == ["from scratch", "imagenet-lite0 (frozen)", "random (frozen)"]
    assert len(labels) == 6 and results["details"]["controls"] == ["imagenet-lite0 (frozen)", "random (frozen)"]
    pairs = {(c["a"], c["b"]) for c in results["contrasts"]}
    shares = labels[3:]
    assert (f"digits, {shares[-1]}", f"digits, {shares[0]}") in pairs
    assert {(f"digits, {s}", "digits, random (frozen)") for s in shares} <= pairs
    assert (tmp_path / "source-size" / "source-size.png").stat().st_size > 10_000  # controls drawn as reference lines
    with pytest.raises(TrainingConfigError, match="Unknown arm kind"):
        run_experiment("source-size", {"source_size_controls": ["imagenet"]}, out_dir=tmp_path / "bad")


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "apply_lr_sweep.py"


def test_tuning_on_a_class_half_writes_both_halves_budget_and_one_rate_for_every_arm(tmp_path):
    """The layer split's tuning: the regime pilot and the lr-sweep train on a class half by name, the pilot's budget
    goes into the scale's dataset_epochs for both halves, and --one-rate makes from scratch's rate every arm's."""
    config = {"datasets": ["animal-mnist-B"], "sweep_arms": ["none"], "sweep_learning_rates": [1e-3, 2e-3],
              "pilot_resolutions": [32], "pilot_epochs": {"animal-mnist-B": [1, 2]},
              "scale": {"name": "quick", "tuning_seed": 77, "max_train_steps": None, "max_train_samples": 16,
                        "max_eval_samples": 16}}  # fmt: skip
    pilot = run_experiment("regime", config, out_dir=tmp_path)
    assert {(r["dataset"], r["num_labels"], r["seed"]) for r in pilot["runs"]} == {("animal-mnist-B", 5, 77)}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    subprocess.run([sys.executable, str(SCRIPT), "--regime", str(tmp_path / "regime" / "results.json"), str(path)],
                   check=True, capture_output=True)  # fmt: skip
    chosen = min((r["x"] for r in pilot["runs"] if r["converged"]), default=2)
    assert json.loads(path.read_text())["scale"]["dataset_epochs"] == {"animal-mnist-B": chosen,
                                                                      "animal-mnist-A": chosen}  # fmt: skip
    sweep = run_experiment("lr-sweep", path, out_dir=tmp_path)
    assert {r["group"] for r in sweep["runs"]} == {"animal-mnist-B: from scratch"}
    assert all(len(r["history"]) == chosen for r in sweep["runs"])
    command = [sys.executable, str(SCRIPT), "--one-rate", str(tmp_path / "lr-sweep" / "results.json"), str(path)]
    # two rates: the choice lies at an edge, so the step beyond it is swept first
    assert subprocess.run(command, capture_output=True).returncode == 3
    sweep = run_experiment("lr-sweep", path, out_dir=tmp_path, resume=True)
    assert len(sweep["runs"]) == 3 and sweep["reused_runs"] == 2
    subprocess.run(command, check=True, capture_output=True)
    written = json.loads(path.read_text())["scale"]
    assert written["learning_rate"] == sweep["details"]["best"]["animal-mnist-B"]["from scratch"]


def test_one_architectures_rows_of_a_cross_family_sweep_tune_a_transfer_matrix_dataset(tmp_path):
    def record(arm, rate, accuracy):
        return {"group": f"tf_efficientnet_lite0: {arm}", "learning_rate": rate, "accuracy": accuracy}

    runs = [record("from scratch", 2e-3, 0.90), record("from scratch", 4e-3, 0.93),
            record("imagenet-lite0 (frozen)", 2e-3, 0.95), record("imagenet-lite0 (frozen)", 4e-3, 0.94),
            record("random (frozen)", 2e-3, 0.80), record("random (frozen)", 8e-3, 0.85),
            {"group": "convnext_atto: from scratch", "learning_rate": 8e-3, "accuracy": 0.99}]  # fmt: skip
    sweep, path = tmp_path / "results.json", tmp_path / "config.json"
    sweep.write_text(json.dumps({"runs": runs, "config": {"sweep_learning_rates": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]}}))
    path.write_text(json.dumps({"datasets": ["digits", "animal-mnist"], "scale": "full",
                                "learning_rates": {"digits": {"from scratch": 0.004}}}))  # fmt: skip
    subprocess.run([sys.executable, str(SCRIPT), "--model", "tf_efficientnet_lite0", "--dataset", "animal-mnist",
                    str(sweep), str(path)], check=True, capture_output=True)  # fmt: skip
    rates = json.loads(path.read_text())["learning_rates"]
    assert rates["digits"] == {"from scratch": 0.004}  # not swept here: kept
    animal = rates["animal-mnist"]
    assert animal["from scratch"] == 4e-3 and animal["imagenet-lite0 (frozen)"] == 2e-3
    assert animal["random (frozen)"] == 8e-3 and animal["animal-mnist bank (frozen)"] == 2e-3  # the bank's rate
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", "x", str(sweep), str(path)], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "--model and --dataset go together" in done.stderr


def test_a_choice_at_an_edge_of_the_range_is_swept_one_step_further_once():
    from masterkey.research.experiments import edge_extensions

    def record(arm, rate, accuracy):
        return {"group": f"m: {arm}", "learning_rate": rate, "accuracy": accuracy}

    runs = [record("low", 2e-3, 0.9), record("low", 4e-3, 0.8), record("low", 8e-3, 0.7),
            record("high", 2e-3, 0.7), record("high", 4e-3, 0.8), record("high", 8e-3, 0.9),
            record("inside", 2e-3, 0.7), record("inside", 4e-3, 0.9), record("inside", 8e-3, 0.8)]  # fmt: skip
    rates = [2e-3, 4e-3, 8e-3]
    assert edge_extensions(runs, rates) == {"m": {"low": (1e-3,), "high": (1.6e-2,)}}
    # swept further: the beyond-step lost for "low" (the edge stays, tried), won for "high" (not extended again)
    runs += [record("low", 1e-3, 0.85), record("high", 1.6e-2, 0.95)]
    assert edge_extensions(runs, rates) == {}


def test_tables_say_over_how_many_source_networks_an_interval_runs():
    from masterkey.research.experiments import contrast_table

    row = {"a": "x, n=8", "b": "y, n=8", **paired_difference([0.1, 0.2, 0.15, 0.12], clusters=[1, 2, 1, 2])}
    assert contrast_table([row]).splitlines()[-1].endswith("| 4 (2 source networks) |")
    plain = {"a": "x, n=8", "b": "y, n=8", **paired_difference([0.1, 0.2, 0.15, 0.12])}
    assert contrast_table([plain]).splitlines()[-1].endswith("| 4 |")
