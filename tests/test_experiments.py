"""The paper's experiments in their quick setting, end to end, and the Hub cards generated from their results."""

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from masterkey import cli
from masterkey._timm import sha256_file
from masterkey.errors import ResultsFormatError, TrainingConfigError
from masterkey.research.experiments import EXPERIMENTS, SCALES, ExperimentConfig, run_experiment
from masterkey.research.cards import write_hub_cards
from masterkey.research.verdicts import plan_verdict


@pytest.fixture(scope="module")
def experiments_dir(tmp_path_factory):
    from masterkey.training import BUILTIN_DATASETS, NAMED_FILTERS

    registries = (dict(BUILTIN_DATASETS), dict(NAMED_FILTERS))
    out = tmp_path_factory.mktemp("experiments")
    for name in EXPERIMENTS:
        assert cli.main(["experiment", name, "--scale", "quick", "--out", str(out)]) == 0
    # the experiments hand their own datasets and filters to each run: no global registry grew
    assert (dict(BUILTIN_DATASETS), dict(NAMED_FILTERS)) == registries
    return out


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_experiment_writes_results_plot_and_command(experiments_dir, name):
    folder = experiments_dir / name
    results = json.loads((folder / "results.json").read_text())
    assert (folder / f"{name}.png").stat().st_size > 10_000
    assert (folder / "command.txt").read_text().strip() == results["command"]
    assert results["command"].startswith(f"masterkey experiment {name} --scale quick")
    # the config that ran is saved beside the results, and reads back as the same config
    config = ExperimentConfig.from_json(folder / "config.json")
    assert config == ExperimentConfig(scale=SCALES["quick"]) == ExperimentConfig.from_dict(results["config"])
    assert results["summary"] and len(results["table"]) == len(results["summary"]) + 2
    by_cell = {}
    for run in results["runs"]:
        assert math.isfinite(run["accuracy"]) and 0.0 <= run["accuracy"] <= 1.0 and math.isfinite(run["train_loss"])
        by_cell.setdefault((run["group"], run["label"]), []).append(run)
    tuning = name in ("regime", "lr-sweep")  # the first seed only, on a validation split held out of train
    for (group, label), runs in by_cell.items():
        assert [r["seed"] for r in runs] == ([0] if tuning else [0, 1, 2]), (group, label)
        assert len({r["run"] for r in runs}) == len(runs)
        assert {r["eval_split"] for r in runs} == ({"train (held out)"} if tuning else {"test"})
        if not tuning:
            # every arm starts at chance's loss (a zero head), so the first step's train loss is ln K for any seed:
            # the seeds show in what the step did
            assert len({round(r["eval_loss"], 6) for r in runs}) > 1, f"identical training in {group}/{label}"
    for row in results["summary"]:
        assert row["n"] == (1 if tuning else 3) and math.isfinite(row["mean"]) and math.isfinite(row["std"])


def test_layer_split_copies_depthwise_and_pointwise_layers(experiments_dir):
    results = json.loads((experiments_dir / "layer-split" / "results.json").read_text())
    groups = {r["group"] for r in results["summary"]}
    assert groups == {"from scratch on B", "AnB depthwise", "BnB depthwise", "AnB pointwise", "BnB pointwise"}
    run = next(r for r in results["runs"] if r["group"] == "AnB pointwise" and r["x"] == max(results["details"]["n"]))
    transfer = json.loads((experiments_dir / "layer-split" / "runs" / run["run"].split("/runs/")[-1] /
                           "results.json").read_text())
    assert transfer["filters"]["injected"] and all("pointwise" in e["transforms"][0] for e in transfer["filters"]["injected"])


def test_cards_from_experiment_results(experiments_dir, tmp_path):
    written = write_hub_cards(tmp_path / "cards", experiments_dir=experiments_dir)
    names = {p.name for p in written}
    assert {"tf_efficientnet_lite0-imagenet-dw", "universal-learned-8", "universal-idealized-8",
            "tf_efficientnet_lite0-digits-dw", "tf_efficientnet_lite0-animal-mnist-dw"} <= names
    matrix = json.loads((experiments_dir / "transfer-matrix" / "results.json").read_text())
    lite0_rows = [r for r in matrix["summary"] if r["filters"] == "imagenet-lite0"]
    text = (tmp_path / "cards" / "tf_efficientnet_lite0-imagenet-dw" / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---")[1])  # the YAML front matter parses
    assert metadata["library_name"] == "masterkey"
    card = ModelCard.load(tmp_path / "cards" / "tf_efficientnet_lite0-imagenet-dw" / "README.md")
    values = {(r.dataset_type, r.metric_value) for r in card.data.eval_results or []}
    for row in lite0_rows:
        baseline_learned = all(r["learned"] for r in matrix["runs"]
                               if r["filters"] == "none" and r["dataset"] == row["dataset"])  # fmt: skip
        # in the metadata only beside a baseline that learned (one quick step never does), rounded as the tables
        assert ((row["dataset"], round(row["mean"], 3)) in values) == baseline_learned
        assert baseline_learned or "⚠ did not learn" in text
        # the same number is in the card's table
        assert f"| {row['group']} | {row['label']} | {row['mean']:.3f} ± {row['std']:.3f} |" in text
    assert "masterkey experiment transfer-matrix --scale quick" in text
    # the experiment's paired contrasts too: the bank against frozen random filters, as results.json has it
    against_random = next(c for c in matrix["contrasts"] if c["b"].endswith("random (frozen)"))
    assert f"| {against_random['a']} | {against_random['b']} | {against_random['mean']:+.3f}" in text
    # the sweep trained the bank too, but on a validation split held out of train: never a card's (test) result
    assert "Experiment: lr-sweep" not in text and "Experiment: regime" not in text
    assert "lr=0.001" not in text


def test_unknown_experiment_or_scale():
    with pytest.raises(TrainingConfigError, match="choose one of"):
        run_experiment("nope")
    with pytest.raises(TrainingConfigError, match="Unknown scale"):
        run_experiment("source-size", scale="huge")


def test_config_file_runs_another_model_and_dataset(tmp_path, capsys):
    """A config picks the architecture and datasets; the config.json written reproduces the run."""
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"model": "mobilenetv3_small_100", "source": "digits",
                                  "scale": {"name": "quick", "seeds": [3, 4]}}))  # fmt: skip
    out = tmp_path / "out"
    assert cli.main(["experiment", "source-size", "--config", str(config), "--out", str(out)]) == 0
    results = json.loads((out / "source-size" / "results.json").read_text())
    assert results["command"] == f"masterkey experiment source-size --config {config} --out {out}"
    assert {r["model"] for r in results["runs"]} == {"mobilenetv3_small_100"}
    assert {r["seed"] for r in results["runs"]} == {3, 4}
    assert results["details"]["source"] == "digits"
    saved = ExperimentConfig.from_json(out / "source-size" / "config.json")
    assert saved.model == "mobilenetv3_small_100" and saved.scale.seeds == (3, 4)
    assert saved.scale.max_train_steps == SCALES["quick"].max_train_steps  # the rest of the named scale


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"modle": "resnet"}, r"Unknown experiment config key\(s\) \['modle'\]"),
        ({"scale": "huge"}, "Unknown scale 'huge'"),
        ({"scale": {"name": "mine", "seeds": [0]}}, "needs every field; missing: resolution"),
        ({"scale": {"name": "quick", "batchsize": 4}}, r"Unknown scale key\(s\) \['batchsize'\]"),
        (["model"], "JSON object of fields"),
        ({"model_variants": [{"model": "convnext_atto"}]}, "model_variants entry is"),
        ({"split_arms": ["AnB", "CnD"]}, r"Unknown split_arms \['CnD'\]"),
        ({"model_variants": [{"model": "convnext_atto", "model_kwargs": {}}]}, "at least one create_model argument"),
    ],
)
def test_bad_config_is_a_clear_error(config, message):
    with pytest.raises(TrainingConfigError, match=message):
        ExperimentConfig.from_dict(config)


def test_bad_config_file_from_the_cli(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{model: ")
    assert cli.main(["experiment", "source-size", "--config", str(broken), "--out", str(tmp_path)]) == 2
    assert "Cannot read the experiment config" in capsys.readouterr().err
    assert cli.main(["experiment", "source-size", "--config", str(tmp_path / "missing.json")]) == 2


def test_layer_split_trains_only_the_arms_and_source_networks_asked_for(tmp_path):
    results = run_experiment("layer-split", {"split_arms": ["AnB"], "scale": {"name": "quick", "seeds": [0]}},
                             out_dir=tmp_path)  # fmt: skip
    assert {r["group"] for r in results["runs"]} == {"from scratch on B", "AnB depthwise", "AnB pointwise"}
    # the pointwise control, paired by seed: depthwise minus pointwise at each n
    assert [(c["a"], c["b"]) for c in results["contrasts"]] == [("AnB depthwise, n=1", "AnB pointwise, n=1")]
    run = {r["group"]: r["accuracy"] for r in results["runs"]}
    assert results["contrasts"][0]["mean"] == pytest.approx(run["AnB depthwise"] - run["AnB pointwise"])
    # only network A is trained: BnB would need B's
    assert [p.name for p in (tmp_path / "layer-split" / "sources").iterdir()] == ["tf_efficientnet_lite0-animal-mnist-A"]


def test_layer_split_needs_a_builtin_dataset(tmp_path):
    with pytest.raises(TrainingConfigError, match="layer-split splits a built-in dataset"):
        run_experiment("layer-split", {"split_dataset": "user/my-photos"}, out_dir=tmp_path)


def test_resume_keeps_finished_runs_and_trains_the_rest(tmp_path, caplog):
    """An interrupted grid continues: runs that finished with the same configuration are read back, not retrained."""
    first = run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path)
    n_runs = len(first["runs"]) + 3  # the cells' runs and the 3 source networks
    missing = tmp_path / "source-size" / "runs" / "digits__from-scratch__seed1"
    (missing / "results.json").unlink()  # as if killed during that run
    again = run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path, resume=True)
    assert again["reused_runs"] == n_runs - 1
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in first["runs"]]
    assert (missing / "results.json").is_file()
    # a run whose filters landed elsewhere than today's mapping rules put them (recorded under an earlier rule: the
    # configuration is the same) trains again, and the log says where they differ
    bank_run = Path(next(r["run"] for r in first["runs"] if r["filters"] != "none")) / "results.json"
    recorded = json.loads(bank_run.read_text())
    injected = recorded["filters"]["injected"]
    assert len(injected) > 1 and injected[0]["source"] != injected[1]["source"]
    injected[0]["source"] = injected[1]["source"]
    bank_run.write_text(json.dumps(recorded))
    with caplog.at_level(logging.WARNING, logger="masterkey"):
        third = run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path, resume=True)
    assert third["reused_runs"] == n_runs - 1
    differ = f"1 of {len(injected)} targets differ; {injected[0]['target']} took {injected[1]['source']} then"
    assert differ in caplog.text
    assert json.loads(bank_run.read_text())["filters"]["injected"][0]["source"] == injected[0]["target"]
    # sources trained anew (another configuration) make the runs that use their filters stale, even where the runs'
    # own settings match: here every bank run
    other = run_experiment("source-size", {"scale": {"name": "quick", "seeds": [0, 1], "source_train_samples": 24}},
                           out_dir=tmp_path, resume=True)  # fmt: skip
    assert other["reused_runs"] == 2  # only the from-scratch cell (2 seeds), which runs before the sources


def test_resume_continues_a_run_cut_off_mid_way_from_its_last_epoch(tmp_path, offline_env, caplog):
    """An invocation killed mid-run leaves the run's newest epoch checkpoint; --resume continues it from there and ends
    with the accuracies of an uninterrupted run, which keeps no checkpoint once it has finished."""
    from conftest import kill_at_checkpoint

    config = tmp_path / "pilot.json"
    config.write_text(json.dumps({"datasets": ["digits"], "pilot_resolutions": [32], "pilot_epochs": {"digits": [3]},
                                  "scale": {"name": "quick", "seeds": [0], "max_train_steps": None,
                                            "max_train_samples": 64, "max_eval_samples": 16}}))  # fmt: skip
    args = ["experiment", "regime", "--config", str(config), "--cpu-threads", "1"]
    assert cli.main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "regime" / "results.json").read_text())["runs"]
    (name,) = [Path(r["run"]).name for r in whole]
    assert not (tmp_path / "whole" / "regime" / "runs" / name / "checkpoints").exists()

    cut = tmp_path / "cut" / "regime" / "runs" / name
    kill_at_checkpoint([sys.executable, "-m", "masterkey", *args, "--out", str(tmp_path / "cut")],
                       checkpoint=cut / "checkpoints" / "epoch_1", env=offline_env, cwd=tmp_path)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="masterkey"):
        assert cli.main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert f"continuing {cut} from its last checkpoint" in caplog.text
    resumed = json.loads((cut / "results.json").read_text())
    # from the end of the two epochs the cut invocation finished, of three
    assert Path(resumed["resumed_from"]["checkpoint"]).name == "epoch_1"
    assert resumed["resumed_from"]["step"] * 3 == resumed["completed_steps"] * 2
    again = json.loads((tmp_path / "cut" / "regime" / "results.json").read_text())["runs"]
    assert [r["history"] for r in again] == [r["history"] for r in whole]
    assert not (cut / "checkpoints").exists()


def test_retrain_measures_some_cells_again_and_reads_the_rest_from_earlier_results(tmp_path, capsys):
    """Published results whose run folders are gone: the globs' runs train into a fresh folder, every other run's
    record is the earlier one, and the summary covers both. The source networks that finished in the earlier
    folder are copied and read back, not trained again."""
    first = run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path / "earlier")
    earlier = tmp_path / "earlier" / "source-size" / "results.json"
    # what a label meant then goes on with the records read back, not with the runs trained again
    scratch_label = next(r["label"] for r in first["runs"] if r["filters"] == "none")
    bank_label = next(r["label"] for r in first["runs"] if r["filters"] != "none")
    notes = {scratch_label: "trained under another recipe", bank_label: "trained under an earlier mapping rule"}
    earlier.write_text(json.dumps({**json.loads(earlier.read_text()), "label_notes": notes}))
    assert cli.main(["experiment", "source-size", "--scale", "quick", "--seeds", "0", "1", "--out",
                     str(tmp_path / "again"), "--retrain", "digits__from-scratch__*", "--earlier-results",
                     str(earlier)]) == 0  # fmt: skip
    again = json.loads((tmp_path / "again" / "source-size" / "results.json").read_text())
    sources = sorted(p.name for p in (tmp_path / "earlier" / "source-size" / "sources").iterdir())
    assert sources and sorted(p.name for p in (tmp_path / "again" / "source-size" / "sources").iterdir()) == sources
    for name in sources:  # the earlier networks themselves (their own training time), none trained anew
        assert ((tmp_path / "again" / "source-size" / "sources" / name / "results.json").read_bytes()
                == (tmp_path / "earlier" / "source-size" / "sources" / name / "results.json").read_bytes())
    assert capsys.readouterr().err.count("copied from the earlier results' folder") == len(sources)
    trained = sorted(p.name for p in (tmp_path / "again" / "source-size" / "runs").iterdir())
    assert trained == ["digits__from-scratch__seed0", "digits__from-scratch__seed1"]
    assert again["earlier_results"] == {"path": str(earlier), "retrain": ["digits__from-scratch__*"],
                                        "runs_read": len(first["runs"]) - 2}  # fmt: skip
    assert "--retrain 'digits__from-scratch__*' --earlier-results" in again["command"]
    assert again["label_notes"] == {bank_label: notes[bank_label]}
    by_run = {Path(r["run"]).name: r for r in first["runs"]}
    for record in again["runs"]:
        name = Path(record["run"]).name
        if name in trained:
            assert record["run"].startswith(str(tmp_path / "again"))
        else:
            assert record == by_run[name]  # the earlier record, as it was
    assert [r["label"] for r in again["summary"]] == [r["label"] for r in first["summary"]]
    # an earlier record of another run (here another rate) is refused, and so is a glob that matches nothing
    changed = json.loads(earlier.read_text())
    changed["runs"][-1]["learning_rate"] = 0.5
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    with pytest.raises(TrainingConfigError, match="is another run: learning_rate 0.5 there"):
        run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path / "again",
                       retrain=["digits__from-scratch__*"], earlier_results=tmp_path / "changed.json", resume=True)
    with pytest.raises(TrainingConfigError, match="matched no run"):
        run_experiment("source-size", scale="quick", seeds=[0, 1], out_dir=tmp_path / "again", resume=True,
                       retrain=["digits__from-scratch__*", "no-such-cell*"], earlier_results=earlier)
    with pytest.raises(TrainingConfigError, match="retrain needs earlier_results"):
        run_experiment("source-size", scale="quick", out_dir=tmp_path / "again", retrain=["*"])
    with pytest.raises(ResultsFormatError, match="not a results.json of the experiment 'transfer-matrix'"):
        run_experiment("transfer-matrix", scale="quick", out_dir=tmp_path / "again", retrain=["*"],
                       earlier_results=earlier)


def test_resume_retrains_only_the_runs_that_use_a_source_trained_anew(tmp_path, caplog):
    """Another learning rate for from scratch on Animal-MNIST retrains that source network and the run that freezes
    its bank; the digits source and every other run (from scratch, the ImageNet bank, the digits bank, ...) are read
    back. A source trained again to the same bytes (a fresh clone) leaves its runs valid; to other bytes, not."""
    config = {"scale": {"name": "quick", "seeds": [0]}}
    first = run_experiment("transfer-matrix", config, out_dir=tmp_path)
    changed = {**config, "learning_rates": {"animal-mnist": {"from scratch": 0.004}}}
    again = run_experiment("transfer-matrix", changed, out_dir=tmp_path, resume=True)
    assert again["reused_runs"] == len(first["runs"]) + 2 - 2  # all but the Animal-MNIST source and its bank's run
    retrained = [r for r in again["runs"] if r["label"] == "animal-mnist bank (frozen)"]
    assert len(retrained) == 1 and len(again["runs"]) == len(first["runs"])
    results = json.loads((tmp_path / "transfer-matrix" / "sources" / "tf_efficientnet_lite0-animal-mnist" /
                          "results.json").read_text())  # fmt: skip
    assert results["config"]["learning_rate"] == 0.004
    # a fresh clone keeps the runs' records, not the source networks: a source trained again to the same bytes (this
    # machine, the same seed) leaves the runs that recorded its weights' hash valid
    digits = tmp_path / "transfer-matrix" / "sources" / "tf_efficientnet_lite0-digits"
    bank_run = next(Path(r["run"]) for r in again["runs"] if str(digits) in r["filters"]) / "results.json"
    recorded = json.loads(bank_run.read_text())
    assert recorded["filters"]["provenance"]["source_sha256"] == sha256_file(digits / "model.safetensors")
    shutil.rmtree(digits)
    fresh = run_experiment("transfer-matrix", changed, out_dir=tmp_path, resume=True)
    assert fresh["reused_runs"] == len(first["runs"]) + 2 - 1  # all but the digits source, trained again
    assert [r["accuracy"] for r in fresh["runs"]] == [r["accuracy"] for r in again["runs"]]
    # weights of other bytes (another machine's arithmetic; here a record edited to say so) retrain the run
    bank_run.write_text(json.dumps({**recorded, "filters": {**recorded["filters"], "provenance": {
        **recorded["filters"]["provenance"], "source_sha256": "0" * 64}}}))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="masterkey"):
        other = run_experiment("transfer-matrix", changed, out_dir=tmp_path, resume=True)
    assert other["reused_runs"] == len(first["runs"]) + 2 - 1  # all but the run with the digits bank
    assert f"its filters came from other weights of the source network {digits.name}" in caplog.text
    # a record without the hash (written before runs kept it): a source that finished after the run (an invocation
    # stopped between the two) makes the run stale even when this invocation reads the source back
    recorded = json.loads(bank_run.read_text())
    del recorded["filters"]["provenance"]["source_sha256"]
    bank_run.write_text(json.dumps(recorded))
    later = (digits / "results.json").stat().st_mtime + 3600
    os.utime(digits / "results.json", (later, later))
    third = run_experiment("transfer-matrix", changed, out_dir=tmp_path, resume=True)
    assert third["reused_runs"] == len(first["runs"]) + 2 - 1  # all but the run with the digits bank


@pytest.mark.parametrize("name", ["transfer-matrix", "layer-split", "source-size", "across-architectures"])
def test_published_plots_redraw_from_their_results_with_chance_for_every_dataset(tmp_path, name):
    import shutil

    from matplotlib.image import imread

    from masterkey.research.experiments import replot, split_classes
    from masterkey.research.experiments.statistics import _chance_levels
    from masterkey.training import BUILTIN_DATASETS

    folder = tmp_path / name
    shutil.copytree(Path(__file__).resolve().parents[1] / "docs" / "experiments" / name, folder)
    image = imread(replot(folder))
    assert image.shape[0] > 400 and image.shape[1] > 600
    runs = json.loads((folder / "results.json").read_text())["runs"]
    datasets = {**BUILTIN_DATASETS, **{h.name: h for h in split_classes("animal-mnist")}}
    chance = _chance_levels(runs, datasets)
    assert set(chance) == {r["dataset"] for r in runs}
    assert chance.get("digits", 0.1) == pytest.approx(0.1) and chance.get("animal-mnist-B", 0.2) == pytest.approx(0.2)


def _result(train_loss, accuracies, classes=10, n_eval=500):
    return {"output_dir": "runs/x", "model": "tf_efficientnet_lite0",
            "dataset": {"num_labels": classes, "num_eval": n_eval},
            "final": {"train_loss": train_loss, "accuracy": accuracies[-1], "num_eval_examples": n_eval},
            "epochs_history": [{"accuracy": a} for a in accuracies]}  # fmt: skip


def test_the_learning_check_judges_loss_against_chance_and_accuracy_against_noise():
    from masterkey.research.experiments import learning_check

    # the digits run: train loss 3.81 above ln 10 = 2.30, accuracy 0.158 barely above chance
    stuck = learning_check(_result(3.81, [0.12, 0.14, 0.158]))
    assert not stuck["learned"] and stuck["chance"] == pytest.approx(0.1)
    good = learning_check(_result(0.6, [0.79, 0.80, 0.795]))
    assert good["learned"] and good["converged"]
    rising = learning_check(_result(0.9, [0.5, 0.6, 0.7]))
    assert rising["learned"] and not rising["converged"] and rising["last_rise"] == pytest.approx(0.2)
    assert learning_check(_result(0.9, [0.7]))["converged"] is None


def test_summaries_pair_each_arm_with_scratch_by_seed():
    from masterkey.research.experiments import markdown_table, summarize

    def record(label, seed, acc):
        return {"group": "g", "label": label, "x": None, "seed": seed, "dataset": "d", "model": "m", "accuracy": acc,
                "filters": "none" if label == "scratch" else "bank", "chance": 0.1, "learned": acc > 0.3,
                "converged": True}  # fmt: skip

    records = [record("scratch", s, a) for s, a in enumerate((0.40, 0.50, 0.45))]
    records += [record("bank", s, a) for s, a in enumerate((0.50, 0.61, 0.54))]  # +0.10, +0.11, +0.09
    bank = summarize(records)[1]
    diff = bank["vs_scratch"]
    assert diff["mean"] == pytest.approx(0.10) and diff["low"] > 0 and diff["real"] and diff["pairs"] == 3
    assert bank["learned"] == 3 and "**+0.100" in markdown_table(summarize(records))
    noisy = [record("scratch", s, a) for s, a in enumerate((0.40, 0.50, 0.45))]
    noisy += [record("bank", s, a) for s, a in enumerate((0.50, 0.45, 0.46))]
    assert not summarize(noisy)[1]["vs_scratch"]["real"]


def test_paired_contrasts_subtract_one_cell_from_another_by_seed():
    from masterkey.research.experiments import contrast_table, paired_contrasts

    def record(group, seed, acc):
        return {"group": group, "label": "n=16", "seed": seed, "accuracy": acc}

    records = [record("dw", s, a) for s, a in enumerate((0.95, 0.96, 0.94, 0.95))]
    records += [record("pw", s, a) for s, a in enumerate((0.70, 0.75, 0.72))]  # seed 3 missing: 3 pairs
    pairs = [[["dw", "n=16"], ["pw", "n=16"]], [["pw", "n=16"], ["dw", "n=16"]], [["dw", "n=16"], ["none", "n=1"]]]
    forward, backward = paired_contrasts(records, pairs)  # the pair with no common seed is left out
    assert forward["mean"] == pytest.approx((0.25 + 0.21 + 0.22) / 3) and forward["pairs"] == 3
    assert forward["real"] and forward["low"] > 0 and forward["a"] == "dw, n=16" and forward["b"] == "pw, n=16"
    assert backward["mean"] == pytest.approx(-forward["mean"]) and backward["high"] < 0
    assert "**+0.227" in contrast_table([forward]) and contrast_table([]) == ""
    noisy = [record("dw", s, a) for s, a in enumerate((0.95, 0.96, 0.94))]
    noisy += [record("pw", s, a) for s, a in enumerate((0.90, 0.98, 0.93))]
    assert not paired_contrasts(noisy, pairs[:1])[0]["real"]


def test_quick_experiments_record_each_runs_history_and_draw_learning_curves(experiments_dir):
    results = json.loads((experiments_dir / "transfer-matrix" / "results.json").read_text())
    assert all(len(r["history"]) == 1 and 0 <= r["history"][0] <= 1 for r in results["runs"])
    assert all({"learned", "converged", "chance"} <= set(r) for r in results["runs"])


def test_learning_curves_show_every_arm_of_every_group(tmp_path):
    from matplotlib.image import imread

    from masterkey.research.experiments import plot_learning_curves

    runs = [{"group": g, "label": label, "history": [0.2, 0.4 + d, 0.5 + d], "chance": 0.1, "seed": s}
            for g in ("a", "b") for label, d in (("from scratch", 0.0), ("bank", 0.1)) for s in range(3)]  # fmt: skip
    path = plot_learning_curves(runs, tmp_path / "curves.png", title="t")
    assert imread(path).shape[1] > 900  # two panels side by side
    assert plot_learning_curves([{**r, "history": [0.5]} for r in runs], tmp_path / "none.png", title="t") is None


def test_a_pilots_budget_per_dataset_is_the_smallest_that_converged_and_a_class_halfs_is_its_other_halfs_too():
    from masterkey.research.experiments import chosen_budgets
    from masterkey.research.experiments.layer_split import other_half

    runs = [{"dataset": "animal-mnist-B", "x": 6, "converged": False},
            {"dataset": "animal-mnist-B", "x": 12, "converged": True},
            {"dataset": "animal-mnist-B", "x": 24, "converged": True},
            {"dataset": "digits", "x": 10, "converged": False}, {"dataset": "digits", "x": 20, "converged": False}]
    assert chosen_budgets(runs, by="dataset") == {"animal-mnist-B": 12, "animal-mnist-A": 12, "digits": 20}
    # a half piloted itself keeps its own budget; a name that is no built-in's half has none
    both = runs + [{"dataset": "animal-mnist-A", "x": 6, "converged": True}]
    assert chosen_budgets(both, by="dataset")["animal-mnist-A"] == 6
    assert (other_half("animal-mnist-A"), other_half("my-photos-B"), other_half("digits")) == ("animal-mnist-B", None,
                                                                                             None)


def test_regime_pilot_and_lr_sweep_cover_their_grid(experiments_dir):
    pilot = json.loads((experiments_dir / "regime" / "results.json").read_text())
    config = ExperimentConfig()
    dataset = config.datasets[0]
    assert [(r["group"], r["x"]) for r in pilot["runs"]] == [
        (f"{dataset} {px}px", epochs) for px in config.pilot_resolutions for epochs in config.pilot_epochs[dataset]]
    assert all(r["filters"] == "none" for r in pilot["runs"])
    sweep = json.loads((experiments_dir / "lr-sweep" / "results.json").read_text())
    assert sorted({r["learning_rate"] for r in sweep["runs"]}) == sorted(config.sweep_learning_rates)
    arms = {r["group"].split(": ", 1)[1] for r in sweep["runs"]}
    assert arms == set(sweep["details"]["arms"]) and set(sweep["details"]["best"][dataset]) == arms
    # a frozen arm is compared with scratch at its own learning rate
    row = next(r for r in sweep["summary"] if r["filters"] == "random" and r["x"] == 1e-3)
    scratch = next(r for r in sweep["runs"] if r["filters"] == "none" and r["learning_rate"] == 1e-3)
    frozen = next(r for r in sweep["runs"] if r["filters"] == "random" and r["learning_rate"] == 1e-3)
    assert row["vs_scratch"]["mean"] == pytest.approx(frozen["accuracy"] - scratch["accuracy"])


def test_best_learning_rates_pick_the_highest_validation_accuracy_per_arm():
    from masterkey.research.experiments import best_learning_rates

    def record(dataset, arm, rate, acc):
        return {"group": f"{dataset}: {arm}", "dataset": dataset, "learning_rate": rate, "accuracy": acc}

    records = [record("d", "from scratch", 1e-3, 0.5), record("d", "from scratch", 4e-3, 0.7),
               record("d", "bank (frozen)", 1e-3, 0.8), record("d", "bank (frozen)", 4e-3, 0.6),
               record("e", "from scratch", 1e-3, 0.3), record("e", "from scratch", 1e-3, 0.5),  # mean 0.4
               record("e", "from scratch", 2e-3, 0.45)]  # fmt: skip
    assert best_learning_rates(records) == {"d": {"from scratch": 4e-3, "bank (frozen)": 1e-3},
                                            "e": {"from scratch": 2e-3}}  # fmt: skip


def test_parallel_jobs_and_per_dataset_regime_give_the_runs_one_process_gives(tmp_path, caplog, capfd):
    """--jobs trains runs in worker processes: the same runs, the same numbers, in the same order as one process,
    each run's end logged by the parent; the scale's per-dataset epochs, training images and the config's per-arm
    learning rates reach each run."""
    config = {"learning_rates": {"digits": {"from scratch": 3e-3}, "animal-mnist": {"from scratch": 1e-3}},
              "scale": {"name": "quick", "seeds": [0], "max_train_steps": None, "max_train_samples": 16,
                        "source_train_samples": 16, "source_max_steps": None, "max_eval_samples": 16,
                        "dataset_epochs": {"digits": 2, "animal-mnist": 3},
                        "dataset_train_samples": {"digits": 12}, "source_seed": 7}}  # fmt: skip
    one = run_experiment("source-size", config, out_dir=tmp_path / "one", cpu_threads=1)
    caplog.set_level(logging.INFO, logger="masterkey.research.experiments")
    capfd.readouterr()
    two = run_experiment("source-size", config, out_dir=tmp_path / "two", jobs=2, cpu_threads=1)
    assert two["jobs"] == 2
    assert "training:" not in capfd.readouterr().err  # the workers, sharing one terminal or log, show no bars
    trained = len(two["runs"]) + 3  # and the 3 source networks
    finished = [r.getMessage() for r in caplog.records if ": finished " in r.getMessage()]
    assert len(finished) == trained and finished[-1].endswith(f"({trained} of {trained} submitted)")
    assert all(re.search(r"accuracy [01]\.\d{4}, \d+ s of training", line) for line in finished)
    assert [(r["label"], r["seed"], r["accuracy"], r["train_loss"]) for r in two["runs"]] == [
        (r["label"], r["seed"], r["accuracy"], r["train_loss"]) for r in one["runs"]]
    scratch = [r for r in one["runs"] if r["filters"] == "none"]
    assert scratch and all(r["learning_rate"] == 3e-3 for r in scratch)
    assert all(r["learning_rate"] == SCALES["quick"].learning_rate for r in one["runs"] if r["filters"] != "none")
    assert all(len(r["history"]) == 2 for r in one["runs"])  # digits' own 2 epochs
    source = json.loads((tmp_path / "one" / "source-size" / "sources" / "tf_efficientnet_lite0-animal-mnist-1" /
                         "results.json").read_text())  # fmt: skip
    # the source network trains as the from-scratch arm on its dataset would: its epochs, its learning rate; with the
    # scale's source seed, not the runs'
    assert len(source["epochs_history"]) == 3 and source["config"]["learning_rate"] == 1e-3
    assert source["config"]["seed"] == 7 and {r["seed"] for r in one["runs"]} == {0}
    # the target's own training images (a harder target), named in its group; the source networks keep theirs
    assert source["dataset"]["num_train"] == 16
    assert {r["group"] for r in one["runs"]} == {"digits, 12 training images"}
    assert {json.loads((Path(r["run"]) / "results.json").read_text())["dataset"]["num_train"]
            for r in one["runs"]} == {12}  # fmt: skip
    assert one["details"]["target_train_images"] == 12


def test_apply_lr_sweep_gives_every_frozen_arm_the_banks_rate_and_keeps_datasets_not_swept(tmp_path):
    """benchmarks/apply_lr_sweep.py writes the sweep's choice into a config: from scratch its own rate, every frozen
    arm of transfer-matrix and (on source-size's target) source-size the bank's, an arm the sweep tuned its own;
    a dataset the sweep did not run keeps its rates."""
    def record(dataset, arm, rate, accuracy):
        return {"group": f"{dataset}: {arm}", "dataset": dataset, "learning_rate": rate, "accuracy": accuracy}

    runs = [record("digits", "from scratch", 2e-3, 0.8), record("digits", "from scratch", 8e-3, 0.9),
            record("digits", "imagenet-lite0 (frozen)", 2e-3, 0.95),
            record("digits", "imagenet-lite0 (frozen)", 8e-3, 0.9),
            record("digits", "random (frozen)", 2e-3, 0.7), record("digits", "random (frozen)", 8e-3, 0.8)]  # fmt: skip
    sweep, config = tmp_path / "results.json", tmp_path / "config.json"
    sweep.write_text(json.dumps({"runs": runs, "config": {"sweep_learning_rates": [1e-3, 2e-3, 8e-3, 1.6e-2]}}))
    kept = {"from scratch": 0.016}
    config.write_text(json.dumps({"datasets": ["digits"], "scale": "full",
                                  "learning_rates": {"animal-mnist": kept}}))  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "apply_lr_sweep.py"
    subprocess.run([sys.executable, str(script), str(sweep), str(config)], check=True, capture_output=True)
    rates = json.loads(config.read_text())["learning_rates"]
    assert rates["animal-mnist"] == kept
    digits = rates["digits"]
    assert digits["from scratch"] == 8e-3 and digits["random (frozen)"] == 8e-3
    assert digits["imagenet-lite0 (frozen)"] == 2e-3 and digits["digits bank (frozen)"] == 2e-3
    assert digits["100% of animal-mnist (8000 images)"] == 2e-3 and digits["10% of animal-mnist (800 images)"] == 2e-3


def _die_in_worker():
    import os

    os._exit(3)  # as a worker killed by the system (out of memory) ends: no exception, no result


def test_a_worker_that_dies_is_a_typed_error_that_says_to_resume(tmp_path):
    from masterkey.errors import WorkerError
    from masterkey.research.experiments.runner import _Runner
    from masterkey.training import BuiltinDataset

    run = _Runner("t", ExperimentConfig(), tmp_path, cpu_threads=1, resume=False, jobs=2)
    run.datasets["dies"] = BuiltinDataset(name="dies", class_names=("a", "b"), load=_die_in_worker,
                                          description="d", source="s", license="MIT")  # fmt: skip
    try:
        run.cell("g", "l", seeds=[0], filters="none", dataset_name="dies")
        with pytest.raises(WorkerError, match="--resume"):
            run.results()
    finally:
        run.close()


def test_transfer_matrix_tries_extra_banks_by_depth_on_the_datasets_named(tmp_path):
    """A stronger source of the same data (the ImageNet lite1 bank, 21 depthwise convs, other widths) as an arm of its
    own, injected into lite0 by depth on the datasets named."""
    results = run_experiment("transfer-matrix", {"extra_banks": ["imagenet-lite1"], "extra_banks_datasets": ["digits"],
                                                 "long_epochs": {"digits": 2}, "long_seeds": [0, 1],
                                                 "scale": {"name": "quick", "seeds": [0], "max_train_steps": None,
                                                           "max_train_samples": 8, "max_eval_samples": 8,
                                                           "source_train_samples": 8}},
                             out_dir=tmp_path)  # fmt: skip
    # the longer budget: scratch and the bank again, each compared with the other at that budget
    long = [r for r in results["summary"] if r["group"] == "digits, 2 epochs"]
    assert [r["filters"] for r in long] == ["none", "imagenet-lite0"]
    assert all(len(r["history"]) == 2 for r in results["runs"] if r["group"] == "digits, 2 epochs")
    assert all(len(r["history"]) == 1 for r in results["runs"] if r["group"] == "digits")
    # with seeds of their own (long_seeds), paired seed by seed
    assert [r["seeds"] for r in long] == [[0, 1], [0, 1]] and long[1]["vs_scratch"]["pairs"] == 2
    bank_long = {r["seed"]: r["accuracy"] for r in results["runs"]
                 if r["group"] == "digits, 2 epochs" and r["filters"] != "none"}  # fmt: skip
    scratch_long = {r["seed"]: r["accuracy"] for r in results["runs"]
                    if r["group"] == "digits, 2 epochs" and r["filters"] == "none"}  # fmt: skip
    assert long[1]["vs_scratch"]["mean"] == pytest.approx(sum(bank_long[s] - scratch_long[s] for s in (0, 1)) / 2)
    extra = [r for r in results["runs"] if r["filters"] == "imagenet-lite1"]
    assert [(r["dataset"], r["label"]) for r in extra] == [("digits", "imagenet-lite1 (frozen, mapping=depth)")]
    run = json.loads((Path(extra[0]["run"]) / "results.json").read_text())
    injected = run["filters"]["injected"]
    # every lite0 depthwise conv gets one of lite1's 21, by relative depth: some from a block of another index
    assert len(injected) == 16 and any(e["source"] != e["target"] for e in injected)
    assert next(r for r in results["summary"] if r["filters"] == "imagenet-lite1")["vs_scratch"]["pairs"] == 1
    # paired by seed: the bank against frozen random filters; the stronger source against the bank where it ran
    against_random, fitted, contrast = results["contrasts"]
    assert (against_random["a"], against_random["b"]) == ("digits, imagenet-lite0 (frozen)", "digits, random (frozen)")
    assert (fitted["a"], fitted["b"]) == ("digits, universal 8 fitted to imagenet-lite0 (frozen)",
                                          "digits, imagenet-lite0 (frozen)")  # fmt: skip
    assert (contrast["a"], contrast["b"]) == ("digits, imagenet-lite1 (frozen, mapping=depth)",
                                              "digits, imagenet-lite0 (frozen)")  # fmt: skip
    lite0 = next(r for r in results["runs"] if r["group"] == "digits" and r["filters"] == "imagenet-lite0")
    assert contrast["mean"] == pytest.approx(extra[0]["accuracy"] - lite0["accuracy"])


def test_across_architectures_trains_each_distinct_mapping_once_and_model_variants_against_their_own_scratch(tmp_path):
    """``size`` gives ConvNeXt (7x7 only; the lite0 bank has 3x3 and 5x5) the injection ``stage`` gives (both count
    module-path stages, and no entry has ConvNeXt's size): one arm. A variant (ConvNeXt with layer scale starting at 1)
    is paired with its own from-scratch cell."""
    from safetensors.torch import load_file

    variant = {"model": "convnext_atto", "model_kwargs": {"ls_init_value": 1.0}}
    results = run_experiment("across-architectures",
                             {"architectures": ["convnext_atto", "mobilenetv3_small_050"], "mappings": ["stage", "size"],
                              "model_variants": [variant],
                              "scale": {"name": "quick", "seeds": [0, 1], "max_targets": None}},
                             out_dir=tmp_path)  # fmt: skip
    assert results["details"]["mappings_trained"] == {"convnext_atto": ["stage"],
                                                      "mobilenetv3_small_050": ["stage", "size"]}  # fmt: skip
    labels = {g: [r["label"] for r in results["summary"] if r["group"] == g] for g in
              dict.fromkeys(r["group"] for r in results["summary"])}  # fmt: skip
    assert labels["convnext_atto (ls_init_value=1.0)"] == ["from scratch", "imagenet-lite0 (frozen, mapping=depth)"]
    assert "imagenet-lite0 (frozen, mapping=size)" in labels["mobilenetv3_small_050"]
    assert not any("size" in label for label in labels["convnext_atto"])
    runs = [r for r in results["runs"] if r["group"] == "convnext_atto (ls_init_value=1.0)"]
    assert {r["pair"] for r in runs} == {"ls_init_value=1.0"}
    scratch = {r["seed"]: r["accuracy"] for r in runs if r["filters"] == "none"}
    bank = {r["seed"]: r["accuracy"] for r in runs if r["filters"] == "imagenet-lite0"}
    row = next(r for r in results["summary"] if r["group"] == "convnext_atto (ls_init_value=1.0)"
               and r["filters"] == "imagenet-lite0")  # fmt: skip
    assert row["vs_scratch"]["mean"] == pytest.approx(sum(bank[s] - scratch[s] for s in (0, 1)) / 2)
    run = json.loads((Path(runs[0]["run"]) / "results.json").read_text())
    assert run["config"]["model_kwargs"] == {"ls_init_value": 1.0}
    gamma = next(v for k, v in load_file(str(Path(runs[0]["run"]) / "model.safetensors")).items() if k.endswith("gamma"))
    assert gamma.float().mean().item() > 0.5  # started at 1, not timm's 1e-6
    # paired by seed: each rule against frozen random filters, and size against depth where both were trained
    rule = "{}, imagenet-lite0 (frozen, mapping={})".format
    assert [(c["a"], c["b"], c["pairs"]) for c in results["contrasts"]] == [
        (rule("convnext_atto", "stage"), "convnext_atto, random (frozen)", 2),
        (rule("mobilenetv3_small_050", "stage"), "mobilenetv3_small_050, random (frozen)", 2),
        (rule("mobilenetv3_small_050", "size"), "mobilenetv3_small_050, random (frozen)", 2),
        (rule("mobilenetv3_small_050", "size"), rule("mobilenetv3_small_050", "stage"), 2)]  # fmt: skip
    saved = ExperimentConfig.from_json(tmp_path / "across-architectures" / "config.json")
    assert saved.model_variants == (variant,)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks" / "configs").glob("*.json")),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_shipped_experiment_config_loads_and_round_trips(path):
    """`make experiments`, the GPU session script and the README's commands read these: each is a valid config, and
    the config an experiment writes back reads as the same config."""
    config = ExperimentConfig.from_json(path)
    assert config.scale.resolution >= 64  # the regime: lite0's last feature map at least 2x2
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_compare_results_lines_up_two_runs_of_a_grid_by_cell_and_seed(tmp_path):
    """benchmarks/compare_results.py: the cells both results hold, each seed before and after, and the mean's change."""
    def results(accuracies):
        return {"runs": [{"group": "AnB pointwise", "label": "n=8", "seed": seed, "accuracy": accuracy}
                         for seed, accuracy in enumerate(accuracies)]}  # fmt: skip

    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(results([0.9, 0.6, 0.7])))
    after.write_text(json.dumps({"runs": [*results([0.7, 0.6, 0.8])["runs"],
                                          {"group": "only after", "label": "x", "seed": 0, "accuracy": 0.5}]}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"
    out = subprocess.run([sys.executable, str(script), str(before), str(after)], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| AnB")]
    assert rows == ["| AnB pointwise, n=8 | 0, 1, 2 | 0.900 0.600 0.700 | 0.700 0.600 0.800 | 0.733 | 0.700 | -0.033 |"]
    assert "only after" not in out


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "@1000000000 +0000",
           "GIT_COMMITTER_DATE": "@1000000000 +0000"}  # fmt: skip
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def test_cross_family_runs_its_committed_plan_and_marks_what_came_after_exploratory(tmp_path):
    """The cross-family grid: every target with scratch, frozen random and each bank by structure; its plan, committed
    before the runs, is in force; the own-family bank lands one to one; a seed added later is exploratory; a plan
    edited after the results is reported and not used."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shipped = json.loads((Path(__file__).resolve().parents[1] / "docs" / "experiments" / "cross-family" /
                          "plan.json").read_text())  # fmt: skip
    keep = {"tf_efficientnet_lite0", "mobilenetv2_100"}
    plan = {**shipped, "seeds": [5101, 5102],
            "primary": [c for c in shipped["primary"] if c["a"][0] in keep],
            "cells": [c for c in shipped["cells"] if c[0] in keep]}  # fmt: skip
    (repo / "plan.json").write_text(json.dumps(plan))
    _git(repo, "add", "plan.json")
    _git(repo, "commit", "-q", "-m", "plan")  # dated 2001: before any run
    config = {"target": "animal-mnist", "plan": str(repo / "plan.json"),
              "family_targets": ["tf_efficientnet_lite0", "mobilenetv2_100"],
              "scale": {"name": "quick", "seeds": [5101, 5102], "max_targets": None}}  # fmt: skip
    results = run_experiment("cross-family", config, out_dir=tmp_path / "out")
    cells = {(r["group"], r["label"]) for r in results["runs"]}
    assert cells == {tuple(c) for c in plan["cells"]}
    assert results["plan"]["status"] == "committed before the first test result" and not results["plan"]["edited_after"]
    assert not any(r["exploratory"] for r in results["runs"])
    confirmatory = results["confirmatory"]
    assert [c["name"] for c in confirmatory] == [c["name"] for c in plan["primary"]]
    assert all(c["pairs"] == 2 and c["p_holm"] >= c["p"] for c in confirmatory)
    assert "mobilenetv2_100: own family (imagenet-mobilenetv2) - imagenet-lite0" in "\n".join(
        results["confirmatory_table"])
    # the verdict, worded by the plan's rules (its two targets' statements, and within the family)
    assert results["verdict"] == plan_verdict(results).to_dict()
    assert [s.split(":")[0] for s in results["verdict"]["statements"]] == [
        "In `tf_efficientnet_lite0`", "In `mobilenetv2_100`", "Within the family"]
    own_run = next(r["run"] for r in results["runs"]
                   if r["group"] == "mobilenetv2_100" and r["label"] == "imagenet-mobilenetv2 (frozen)")
    own = json.loads((Path(own_run) / "results.json").read_text())
    injected = own["filters"]["injected"]
    assert len(injected) == 17 and not own["filters"]["untouched"]
    assert all(e["transforms"] == ["copied"] for e in injected)  # torchvision's MobileNetV2 into timm's, one to one
    # a third seed and a later edit of the plan: the seed's runs are exploratory, the edit is reported and unused
    (repo / "plan.json").write_text(json.dumps({**plan, "seeds": [5101, 5102, 5103]}))
    again = run_experiment("cross-family", {**config, "scale": {**config["scale"], "seeds": [5101, 5102, 5103]}},
                           out_dir=tmp_path / "out", resume=True)  # fmt: skip
    assert {r["seed"] for r in again["runs"] if r["exploratory"]} == {5103}
    assert any("not committed" in e for e in again["plan"]["edited_after"])
    assert all(c["pairs"] == 2 for c in again["confirmatory"])
    assert any("(exploratory)" in line for line in again["table"])


def test_tuning_per_architecture_chooses_budgets_and_rates_the_config_takes(tmp_path):
    from masterkey.research.experiments import chosen_budgets

    config = {"target": "animal-mnist", "tuning_models": ["mobilenetv2_100"], "sweep_arms": ["none"],
              "sweep_banks": ["imagenet-mobilenetv2"], "sweep_learning_rates": [1e-3, 2e-3],
              "pilot_resolutions": [32], "pilot_epochs": {"animal-mnist": [1, 2]},
              "scale": {"name": "quick", "seeds": [5101], "tuning_seed": 5100, "max_train_steps": None,
                        "max_train_samples": 16, "max_eval_samples": 16}}  # fmt: skip
    pilot = run_experiment("regime", config, out_dir=tmp_path)
    assert [(r["group"], r["x"], r["seed"]) for r in pilot["runs"]] == [
        ("mobilenetv2_100 animal-mnist 32px", 1, 5100), ("mobilenetv2_100 animal-mnist 32px", 2, 5100)]
    assert all(r["eval_split"] == "train (held out)" for r in pilot["runs"]) and "plan" not in pilot
    budgets = chosen_budgets(pilot["runs"])
    converged = [r["x"] for r in pilot["runs"] if r["converged"]]
    assert budgets == {"mobilenetv2_100": min(converged, default=2)}
    sweep = run_experiment("lr-sweep", {**config, "model_epochs": budgets}, out_dir=tmp_path)
    assert {r["group"] for r in sweep["runs"]} == {"mobilenetv2_100: from scratch",
                                                   "mobilenetv2_100: imagenet-mobilenetv2 (frozen)"}  # fmt: skip
    assert all(len(r["history"]) == budgets["mobilenetv2_100"] for r in sweep["runs"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "model_epochs": budgets}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "apply_lr_sweep.py"
    command = [sys.executable, str(script), "--regime", str(tmp_path / "regime" / "results.json"),
               str(tmp_path / "lr-sweep" / "results.json"), str(path)]  # fmt: skip
    # with two rates every choice lies at an edge of the range: each arm is swept one step further first
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 3 and "sweep one step further" in first.stdout
    extra = json.loads(path.read_text())["sweep_extra_rates"]["mobilenetv2_100"]
    assert set(extra) == {"from scratch", "imagenet-mobilenetv2 (frozen)"}
    assert all(rates in ([5e-4], [4e-3]) for rates in extra.values())
    assert "learning_rates" not in json.loads(path.read_text())  # nothing chosen yet
    sweep = run_experiment("lr-sweep", path, out_dir=tmp_path, resume=True)
    assert sweep["reused_runs"] == 4 and len(sweep["runs"]) == 6
    subprocess.run(command, check=True, capture_output=True)  # extended once: the choice is final now
    written = json.loads(path.read_text())
    assert written["model_epochs"] == budgets
    assert written["learning_rates"] == sweep["details"]["best"]
    assert set(written["learning_rates"]["mobilenetv2_100"]) == {"from scratch", "imagenet-mobilenetv2 (frozen)"}


def test_cross_family_mapping_control_pairs_a_bank_by_another_rule_at_the_bank_arms_rate(tmp_path):
    """``mapping_controls``: the lite0 bank in MobileNetV3 by the earlier rule (``stage``) beside the same bank by
    ``depth``, at the rate chosen for the bank's arm, with the paired contrast depth - stage; an unknown rule is a
    typed error before anything trains."""
    model = "mobilenetv3_large_100"
    config = {"target": "animal-mnist", "family_targets": [model], "family_banks": ["imagenet-lite0"],
              "mapping_controls": {model: {"imagenet-lite0": ["stage"]}},
              "learning_rates": {model: {"imagenet-lite0 (frozen)": 0.003}},
              "scale": {"name": "quick", "seeds": [5101], "max_targets": None}}  # fmt: skip
    results = run_experiment("cross-family", config, out_dir=tmp_path)
    runs = {r["label"]: r for r in results["runs"]}
    assert set(runs) == {"from scratch", "random (frozen)", "imagenet-lite0 (frozen)",
                         "imagenet-lite0 (frozen, mapping=stage)"}  # fmt: skip
    depth, stage = runs["imagenet-lite0 (frozen)"], runs["imagenet-lite0 (frozen, mapping=stage)"]
    assert stage["learning_rate"] == depth["learning_rate"] == 0.003 and runs["from scratch"]["learning_rate"] != 0.003
    recorded = {label: json.loads((Path(r["run"]) / "results.json").read_text()) for label, r in
                (("depth", depth), ("stage", stage))}  # fmt: skip
    assert recorded["stage"]["config"]["mapping"] == "stage" and recorded["depth"]["config"]["mapping"] == "depth"
    sources = {label: [e["source"] for e in r["filters"]["injected"]] for label, r in recorded.items()}
    assert len(sources["stage"]) == len(sources["depth"]) == 15 and sources["stage"] != sources["depth"]
    (contrast,) = [c for c in results["contrasts"] if "mapping=stage" in c["b"]]
    assert "imagenet-lite0 (frozen)" in contrast["a"]
    assert contrast["mean"] == pytest.approx(depth["accuracy"] - stage["accuracy"])
    with pytest.raises(TrainingConfigError, match=r"Unknown mapping_controls rule\(s\) \['by-name'\]"):
        run_experiment("cross-family", {**config, "mapping_controls": {model: {"imagenet-lite0": ["by-name"]}}},
                       out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
