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
