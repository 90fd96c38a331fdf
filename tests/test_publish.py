"""Publishing: the exact Hub folder, a card generated from a results file, and the dry run of the CLI."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

import masterkey
from masterkey import cli
from masterkey.errors import BankFormatError
from masterkey.publishing import load_card_results, publish_bank


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "card_results.json"
    path.write_text(json.dumps({
        "results": [
            {"task_type": "image-classification", "dataset_type": "digits", "dataset_name": "digits",
             "metric_type": "accuracy", "metric_value": 0.5, "metric_name": "accuracy (frozen, 3 seeds)"},
            {"task_type": "image-classification", "dataset_type": "animal-mnist", "dataset_name": "animal-mnist",
             "metric_type": "accuracy", "metric_value": 0.25, "metric_name": "accuracy (frozen, 3 seeds)"},
        ],
        "sections": [{"title": "Reproduce", "body": "`python examples/experiments/transfer_matrix.py`"}],
    }))
    return path


def test_publish_dry_run_builds_the_repo_folder_with_results_in_the_card(tmp_path, results_file):
    bank = masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3)}, source_dataset="noise")
    results, sections = load_card_results(results_file)
    files = publish_bank(bank, "org/noise-dw", folder=tmp_path / "repo", results=results,
                         card_kwargs={"sections": sections}, dry_run=True)
    assert [name for name, _ in files] == ["README.md", "config.json", "filters.safetensors"]
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    assert card.data.library_name == "masterkey"
    metadata = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert metadata == {("digits", "accuracy"): 0.5, ("animal-mnist", "accuracy"): 0.25}
    # the table in the text shows the same numbers as the metadata
    for r in card.data.eval_results:
        assert f"| {r.dataset_name} | {r.metric_name} | {r.metric_value} |" in card.text
    assert "## Reproduce" in card.text and 'load_master_filters("org/noise-dw")' in card.text
    assert torch.equal(masterkey.load_master_filters(tmp_path / "repo")["a"], bank["a"])


def test_publish_cli_dry_run(tmp_path, results_file, capsys):
    bank = masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3)})
    bank.save_pretrained(tmp_path / "bank")
    out = tmp_path / "hub" / "noise-dw"
    assert cli.main(["publish", str(tmp_path / "bank"), "--out", str(out), "--results", str(results_file),
                     "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload to masterkey-filters/noise-dw" in printed and "filters.safetensors" in printed
    assert "masterkey-filters/noise-dw" in (out / "README.md").read_text()


def test_bad_results_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"results": [{"metric": "accuracy"}]}))
    with pytest.raises(BankFormatError, match="EvalResult"):
        load_card_results(path)


def test_cards_build_on_a_fresh_clone_into_a_new_folder_and_state_a_licence(tmp_path):
    import shutil
    from pathlib import Path

    from huggingface_hub import ModelCard

    from masterkey.research.cards import write_hub_cards

    experiments = tmp_path / "experiments"
    shutil.copytree(Path(__file__).resolve().parents[1] / "docs" / "experiments", experiments)
    written = write_hub_cards(tmp_path / "new" / "cards", experiments_dir=experiments)
    names = {p.name for p in written}
    assert {"tf_efficientnet_lite0-imagenet-dw", "tf_efficientnet_lite1-imagenet-dw", "tf_efficientnet_lite2-imagenet-dw",
            "universal-learned-8", "universal-idealized-8", "tf_efficientnet_lite0-digits-dw",
            "tf_efficientnet_lite0-animal-mnist-dw", "mobilenet_v2-imagenet-dw"} == names  # fmt: skip
    for folder in written:
        card = ModelCard.load(folder / "README.md")
        assert card.data.license, folder.name
        titles = [line for line in card.text.splitlines() if line.startswith("## ")]
        assert len(titles) == len(set(titles)), (folder.name, titles)
    learned = ModelCard.load(tmp_path / "new" / "cards" / "universal-learned-8" / "README.md").text
    assert "masterkey.inject_universal(" in learned and "from_pretrained_filters(" not in learned


def test_card_metadata_carries_a_result_only_beside_a_baseline_that_learned(tmp_path):
    import json

    from masterkey.research.cards import BANK_METRIC, SCRATCH_METRIC, _card_rows, experiment_card_results

    def run(filters, label, seed, accuracy, learned):
        return {"group": "animal-mnist", "label": label, "x": None, "seed": seed, "dataset": "animal-mnist",
                "model": "tf_efficientnet_lite0", "accuracy": accuracy, "filters": filters, "chance": 0.1,
                "train_loss": 0.5 if learned else 3.0, "learned": learned, "converged": True}  # fmt: skip

    for name, learned in (("learned", True), ("stuck", False)):
        folder = tmp_path / name / "transfer-matrix"
        folder.mkdir(parents=True)
        runs = [run("none", "from scratch", s, 0.70 + s / 100, learned) for s in range(3)]
        runs += [run("imagenet-lite0", "imagenet-lite0 (frozen)", s, 0.80 + s / 100, True) for s in range(3)]
        (folder / "results.json").write_text(json.dumps({
            "experiment": "transfer-matrix", "model": "tf_efficientnet_lite0", "runs": runs, "summary": [], "table": [], "details": {},
            "scale": {"name": "x", "seeds": [0, 1, 2], "resolution": 64}, "wall_time_s": 60, "command": "cmd"}))  # fmt: skip
        found = experiment_card_results(tmp_path / name, "imagenet-lite0")
        # the bank's number with from scratch's beside it (same seeds), or none beside a baseline that did not learn
        assert [(r.dataset_name, r.metric_name, r.metric_value) for r in found.results] == (
            [("animal-mnist", BANK_METRIC, 0.81), ("animal-mnist", SCRATCH_METRIC, 0.71)] if learned else [])
        assert ("⚠ did not learn" in found.table) is not learned and "**+0.100 [+0.100, +0.100]**" in found.table
        assert "wall time 1.0 min. Reproduce" in found.sections[0][1]
    # a resumed experiment says its wall time covers only what it trained itself
    data = json.loads((folder / "results.json").read_text())
    text = _card_rows({**data, "wall_time_s": 30, "reused_runs": 4,
                       "runs": [{**r, "train_time_s": 600} for r in data["runs"]]}, "imagenet-lite0").sections[0][1]  # fmt: skip
    assert "wall time 0.5 min for the last invocation, which read 4 runs and source networks back" in text
    assert "the 6 runs' own training time adds up to 60 min" in text
    # one that trained nothing says so, rather than give its seconds as the experiment's wall time
    text = _card_rows({**data, "wall_time_s": 7, "reused_runs": 7,
                       "runs": [{**r, "train_time_s": 600} for r in data["runs"]]}, "imagenet-lite0").sections[0][1]  # fmt: skip
    assert "the 6 runs' own training time adds up to 60 min; the last invocation only read them back" in text
    assert "wall time 0.1 min" not in text


def test_cards_say_how_to_reproduce_results_whose_named_scale_has_changed_since():
    import json
    from dataclasses import asdict
    from pathlib import Path

    from masterkey.research.experiments import SCALES
    from masterkey.research.experiments import reproduce_text as _reproduce

    data = {"experiment": "source-size", "command": "masterkey experiment source-size --scale full",
            "scale": json.loads(json.dumps(asdict(SCALES["full"])))}  # fmt: skip
    assert _reproduce(data) == "Reproduce with `masterkey experiment source-size --scale full`."
    then = {**data, "scale": {**data["scale"], "resolution": 32, "num_train_epochs": 4}}  # the full scale before
    assert "--config config.json" in _reproduce(then) and "meant 32 px" in _reproduce(then)
    # other seeds than the scale's, named in the command: the command reproduces them
    seeds = {**data, "command": data["command"] + " --seeds 0 1 2 3 4",
             "scale": {**data["scale"], "seeds": [0, 1, 2, 3, 4]}}  # fmt: skip
    assert _reproduce(seeds) == f"Reproduce with `{seeds['command']}`."
    assert "--config config.json" in _reproduce({**seeds, "command": data["command"]})
    # a scale from a config file (here with its own source seed): the command, which names the config
    configured = {**data, "command": "masterkey experiment layer-split --config benchmarks/configs/x.json --resume",
                  "scale": {**data["scale"], "source_seed": 1000}}  # fmt: skip
    assert _reproduce(configured).startswith(f"Reproduce with `{configured['command']}`; the config.json beside")
    assert (Path(__file__).resolve().parents[1] / "docs" / "experiments" / "source-size" / "config.json").is_file()


def test_cards_compare_a_longer_budget_with_scratch_at_that_budget():
    """A transfer matrix with a longer budget has two from-scratch cells on one dataset: each arm's card row names its
    own baseline, and its metadata entry says which budget it is."""
    from masterkey.research.cards import _card_rows

    def run(group, filters, seed, acc, pair=None):
        row = {"group": group, "label": filters, "x": None, "seed": seed, "dataset": "digits", "model": "m",
               "filters": filters, "accuracy": acc, "train_loss": 0.3, "learned": True, "converged": True,
               "chance": 0.1, "num_labels": 10}  # fmt: skip
        return {**row, "pair": pair} if pair else row

    runs = [run("digits", "none", s, 0.80 + s / 100) for s in range(3)]
    runs += [run("digits", "bank", s, 0.90 + s / 100) for s in range(3)]
    runs += [run("digits, 12 epochs", "none", s, 0.95, pair="12 epochs") for s in range(3)]
    runs += [run("digits, 12 epochs", "bank", s, 0.96, pair="12 epochs") for s in range(3)]
    data = {"experiment": "transfer-matrix", "runs": runs, "command": "c", "wall_time_s": 60.0,
            "scale": {"name": "mine", "seeds": [0, 1, 2], "resolution": 64}}  # fmt: skip
    found = _card_rows(data, "bank")
    assert [(r.dataset_name, r.metric_value) for r in found.results] == [
        ("digits", 0.91), ("digits", 0.81), ("digits (12 epochs)", 0.96), ("digits (12 epochs)", 0.95)]
    rows = found.table.splitlines()
    assert "0.810 ± 0.010" in rows[0] and "+0.100" in rows[0]  # beside its own scratch
    assert "0.950 ± 0.000" in rows[1] and "+0.010" in rows[1]


def test_card_metadata_names_other_architectures_variants_and_mapping_rules_apart():
    """across-architectures puts one bank in several models, by two mapping rules and in a model variant: each
    model-index entry names what tells it from the others, so no two entries share a name."""
    from masterkey.research.cards import _card_rows

    def run(model, label, filters, seed, acc, pair=None):
        row = {"group": f"{model} ({pair})" if pair else model, "label": label, "x": None, "seed": seed,
               "dataset": "animal-mnist", "model": model,
               "filters": filters, "accuracy": acc, "train_loss": 0.3, "learned": True, "converged": True,
               "chance": 0.1, "num_labels": 10}  # fmt: skip
        return {**row, "pair": pair} if pair else row

    runs = []
    for model, pair in (("mobilenetv3_large_100", None), ("convnext_atto", None), ("convnext_atto", "ls=1")):
        for s in range(3):
            runs.append(run(model, "from scratch", "none", s, 0.8, pair))
            runs.append(run(model, "bank (mapping=depth)", "bank", s, 0.85, pair))
            if model.startswith("mobilenet"):
                runs.append(run(model, "bank (mapping=size)", "bank", s, 0.9, pair))
    data = {"experiment": "across-architectures", "model": "tf_efficientnet_lite0", "runs": runs, "command": "c",
            "wall_time_s": 60.0, "scale": {"name": "mine", "seeds": [0, 1, 2], "resolution": 64}}  # fmt: skip
    names = [r.dataset_name for r in _card_rows(data, "bank").results][::2]  # each with from scratch beside it
    assert names == ["animal-mnist (mobilenetv3_large_100, bank (mapping=depth))",
                     "animal-mnist (mobilenetv3_large_100, bank (mapping=size))",
                     "animal-mnist (convnext_atto)", "animal-mnist (convnext_atto, ls=1)"]  # fmt: skip
    # the experiment's own model needs no name
    own = {**data, "runs": [{**r, "model": "tf_efficientnet_lite0"} for r in runs if r["model"] == "convnext_atto"]}
    assert [r.dataset_name for r in _card_rows(own, "bank").results][::2] == ["animal-mnist", "animal-mnist (ls=1)"]
    # a label whose rule was renamed since its runs trained is marked, and its note is under the experiment's table
    found = _card_rows({**data, "label_notes": {"bank (mapping=depth)": "the earlier rule, today's stage"}}, "bank")
    marked = [row for row in found.table.splitlines() if "†" in row]
    assert len(marked) == 3 and all("bank (mapping=depth) †" in row for row in marked)
    assert "† bank (mapping=depth): the earlier rule, today's stage" in found.sections[0][1]
    assert "†" not in _card_rows(data, "bank").table


def test_card_metadata_keeps_one_result_per_dataset_the_plainest(tmp_path):
    """The Hub's model-index groups eval results by task, dataset and split: two results on one dataset would merge
    into one entry with two unnamed accuracies. The card keeps the bank in the experiments' own model at the main
    budget; its table keeps every row."""
    import json

    from masterkey.research.cards import experiment_card_results

    def run(group, model, label, filters, seed, acc, pair=None):
        row = {"group": group, "label": label, "x": None, "seed": seed, "dataset": "animal-mnist", "model": model,
               "filters": filters, "accuracy": acc, "train_loss": 0.3, "learned": True, "converged": True,
               "chance": 0.1, "num_labels": 10}  # fmt: skip
        return {**row, "pair": pair} if pair else row

    experiments = {
        "across-architectures": [run("convnext_atto", "convnext_atto", label, f, s, a)
                                 for label, f, a in (("from scratch", "none", 0.8), ("bank", "bank", 0.85))
                                 for s in range(3)],
        "transfer-matrix": [run(g, "m", label, f, s, a, pair) for g, pair, label, f, a in (
            ("animal-mnist", None, "from scratch", "none", 0.9), ("animal-mnist", None, "bank", "bank", 0.95),
            ("animal-mnist, 12 epochs", "12 epochs", "from scratch", "none", 0.96),
            ("animal-mnist, 12 epochs", "12 epochs", "bank", "bank", 0.97)) for s in range(3)],
    }  # fmt: skip
    for name, runs in experiments.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "experiment": name, "model": "m", "runs": runs, "summary": [], "table": [], "details": {}, "command": "c", "wall_time_s": 60,
            "scale": {"name": "x", "seeds": [0, 1, 2], "resolution": 64}}))  # fmt: skip
    found = experiment_card_results(tmp_path, "bank")
    assert [(r.dataset_name, r.metric_value) for r in found.results] == [("animal-mnist", 0.95), ("animal-mnist", 0.9)]
    rows = [line for line in found.table.splitlines() if line.startswith(("| across", "| transfer"))]
    assert len(rows) == 3  # every row: ConvNeXt, 6 and 12 epochs
    assert "| `m` (12 epochs) | bank (exploratory) |" in found.table  # no plan preceded these grids
    assert "| `convnext_atto` | bank (exploratory) |" in found.table
    # two plain results on one dataset (a universal card's two arms): the first, the card's own arm, is kept
    from huggingface_hub import EvalResult

    from masterkey.research.cards import one_per_dataset

    def result(name, dataset, value):
        return EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=name,
                          dataset_split="test", metric_type="accuracy", metric_value=value)  # fmt: skip

    kept = one_per_dataset([result("digits", "digits", 0.9), result("digits", "digits", 0.8),
                            result("animal-mnist (x)", "animal-mnist", 0.7), result("animal-mnist", "animal-mnist", 0.6)])
    assert [(r.dataset_name, r.metric_value) for r in kept] == [("digits", 0.9), ("animal-mnist", 0.6)]
    # from scratch's number beside a bank's goes with it, kept or dropped
    from masterkey.research.cards import SCRATCH_METRIC

    def scratch(name, dataset, value):
        return EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=name,
                          dataset_split="test", metric_type="accuracy", metric_value=value,
                          metric_name=SCRATCH_METRIC)  # fmt: skip

    kept = one_per_dataset([result("digits (x)", "digits", 0.9), scratch("digits (x)", "digits", 0.85),
                            result("digits", "digits", 0.8), scratch("digits", "digits", 0.7)])
    assert [r.metric_value for r in kept] == [0.8, 0.7]


def test_a_cards_headline_is_the_primary_arm_of_a_plan_in_force(tmp_path):
    """An experiment under an analysis plan in force comes first in the card's metadata, with its confirmatory cell;
    its exploratory cells are marked so in the table."""
    import json

    from masterkey.research.cards import BANK_METRIC, experiment_card_results

    def run(experiment, label, filters, seed, acc, exploratory=None):
        row = {"group": "digits", "label": label, "x": None, "seed": seed, "dataset": "digits", "model": "m",
               "filters": filters, "accuracy": acc, "train_loss": 0.3, "learned": True, "converged": True,
               "chance": 0.1, "num_labels": 10}  # fmt: skip
        return row if exploratory is None else {**row, "exploratory": exploratory}

    old = [run("a", l, f, s, a) for l, f, a in (("from scratch", "none", 0.9), ("bank", "bank", 0.99)) for s in range(3)]
    new = [run("z", l, f, s, a, e) for l, f, a, e in (("from scratch", "none", 0.95, False), ("bank", "bank", 0.96, False),
                                                    ("bank, other rate", "bank", 0.97, True)) for s in range(3)]
    # the planned experiment kept with its tuning parts in one folder, as `make experiment-cross-family` keeps them
    for name, runs, plan in (("a-earlier", old, None),
                             ("z-planned/transfer-matrix", new, {"plan": {"experiment": "transfer-matrix"}})):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "results.json").write_text(json.dumps({
            "experiment": "transfer-matrix", "model": "m", "runs": runs, "summary": [], "table": [], "details": {}, "command": "c",
            "wall_time_s": 60, "scale": {"name": "x", "seeds": [0, 1, 2], "resolution": 64},
            **({"plan": plan} if plan else {})}))  # fmt: skip
    found = experiment_card_results(tmp_path, "bank")
    assert [(r.metric_name, r.metric_value) for r in found.results][0] == (BANK_METRIC, 0.96)
    rows = found.table.splitlines()
    assert any("| bank, other rate (exploratory) | 0.970" in row for row in rows)
    assert any("| bank | 0.960" in row for row in rows)  # the plan's arm
    assert any("| bank (exploratory) | 0.990" in row for row in rows)  # no plan preceded the earlier grid
    titles = [title for title, _ in found.sections]
    assert titles == ["Experiment: transfer-matrix (exploratory)", "Experiment: transfer-matrix"]
    assert "No analysis plan preceded this grid" in found.sections[0][1]
    assert "No analysis plan preceded this grid" not in found.sections[1][1]


def test_cards_read_each_experiments_results_one_or_two_folders_down_and_never_a_runs_own(tmp_path):
    from masterkey.research.cards import experiment_results_paths

    for path in ("transfer-matrix/results.json", "transfer-matrix/source-seed-0/results.json",
                 "transfer-matrix/runs/digits__from-scratch__seed0/results.json",
                 "cross-family/lr-sweep/results.json", "cross-family/lr-sweep/runs/x__seed1/results.json",
                 "cross-family/cross-family/results.json", "cross-family/sources/net/results.json",
                 "cross-family/plan.json", "notes/results.txt"):  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in experiment_results_paths(tmp_path)]
    # an experiment's own earlier version stays out: the folder has results of its own
    assert found == ["cross-family/cross-family/results.json", "cross-family/lr-sweep/results.json",
                     "transfer-matrix/results.json"]  # fmt: skip


def test_a_dataset_bank_card_finds_its_runs_read_back_from_another_experiment_folder():
    """After --retrain the source network's bank is in the new experiment folder while the runs that froze it, read
    back from the earlier results, name it in the earlier one: the card takes the spec they recorded."""
    from masterkey.research.cards import _recorded_spec

    runs = [{"filters": "imagenet-lite0", "run": "earlier/transfer-matrix/runs/digits__imagenet-lite0-frozen__seed0"},
            {"filters": "earlier/transfer-matrix/sources/lite0-digits/bank-all",
             "run": "earlier/transfer-matrix/runs/digits__digits-bank-frozen__seed0"}]  # fmt: skip
    assert _recorded_spec(runs, "again/transfer-matrix/sources/lite0-digits/bank-all") == runs[1]["filters"]
    assert _recorded_spec(runs, "again/transfer-matrix/sources/lite0-animal/bank-all") == (
        "again/transfer-matrix/sources/lite0-animal/bank-all")  # no run froze it: its own folder


def test_dataset_bank_cards_publish_the_planned_transfer_matrix_and_say_its_rows_span_its_source_networks(tmp_path):
    """Verdict 1's confirmatory transfer matrix (under a plan in force, 3 source networks per dataset bank) is the
    one whose banks the cards publish, over the exploratory one; its arm's row spans every source network."""
    import json

    from masterkey.research.cards import dataset_banks_results, experiment_card_results

    assert dataset_banks_results(tmp_path) is None
    bank = "outputs/confirm-verdict-1/transfer-matrix/sources/lite0-digits-6111/bank-all"
    runs = [{"group": "digits", "label": label, "x": None, "seed": seed, "dataset": "digits", "model": "m",
             "filters": filters if source is None or source == 6111 else bank.replace("6111", str(source)),
             "accuracy": acc + 0.001 * seed, "train_loss": 0.3, "learned": True, "converged": True, "chance": 0.1,
             "num_labels": 10, "exploratory": label != "from scratch", **({} if source is None else {"source_seed": source})}
            for label, filters, acc, per_seed in (("from scratch", "none", 0.9, False), ("digits bank (frozen)", bank, 0.95, True))
            for seed, source in zip(range(6), (6111, 6112, 6113) * 2) if per_seed or source]  # fmt: skip
    for folder, plan in (("transfer-matrix", None), ("confirm-verdict-1/transfer-matrix", {"experiment": "x"})):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "results.json").write_text(json.dumps({
            "experiment": "transfer-matrix", "model": "m", "runs": runs, "summary": [], "table": [], "details": {}, "command": "c",
            "wall_time_s": 60, "scale": {"name": "x", "seeds": list(range(6)), "resolution": 64},
            **({"plan": {"plan": plan}} if plan else {})}))  # fmt: skip
    assert dataset_banks_results(tmp_path) == tmp_path / "confirm-verdict-1" / "transfer-matrix" / "results.json"
    rows = [r for r in experiment_card_results(tmp_path, bank).table.splitlines() if "digits bank" in r]
    assert rows and all("(over 3 source networks, this bank one of them)" in r and "| 6 |" in r for r in rows)
    (tmp_path / "confirm-verdict-1" / "transfer-matrix" / "results.json").unlink()
    assert dataset_banks_results(tmp_path) == tmp_path / "transfer-matrix" / "results.json"  # only the exploratory
