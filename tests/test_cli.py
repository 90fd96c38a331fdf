"""The command line under bad input: every problem masterkey or argparse diagnoses is one line and exit 2, before any
work, with no traceback; the dry run shows the real target and only the bank's files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import masterkey
from masterkey import cli


class Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def run(capsys):
    """``masterkey ARGV`` in this process: its exit code and what it printed on stderr."""

    def _run(*argv: str) -> Result:
        try:
            code = cli.main(list(argv))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        return Result(code, capsys.readouterr().err)

    return _run


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bank") / "noise-dw"
    masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3)}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("command", ["extract mobilenetv3_small_050", "publish BANK", "analyze BANK", "cards",
                                     "experiment layer-split"])  # fmt: skip
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_output_folder_that_cannot_be_one_is_refused_before_any_work(run, tmp_path, bank_dir, command, where):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = afile if where == "file" else afile / "sub"
    argv = [a.replace("BANK", str(bank_dir)) for a in command.split()] + ["--out", str(out)]
    result = run(*argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is a file" in result.stderr or "lies under the file" in result.stderr
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "imagenet-lite0", "--num-classes", "-5"], "positive integer"),
        (["experiment", "layer-split", "--seeds", "-1"], "a seed is an integer"),
        (["experiment", "layer-split", "--cpu-threads", "0"], "positive integer"),
        (["extract", "mobilenetv3_small_050", "--weights", "/no/such/file.safetensors", "--out", "OUT"],
         "does not exist"),
        (["publish", "BANK", "--out", "OUT", "--repo-id", "not a repo id"], "not a valid Hub repo id"),
        (["publish", "BANK", "--out", "OUT", "--repo-id", "org/name"], "HF_HUB_OFFLINE"),
    ],
)
def test_diagnosed_problems_are_one_line_and_exit_2(run, monkeypatch, tmp_path, bank_dir, argv, message):
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    argv = [a.replace("BANK", str(bank_dir)).replace("OUT", str(tmp_path / "out")) for a in argv]
    result = run(*argv)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_dry_run_prints_the_real_target_and_lists_only_the_bank_files(tmp_path, bank_dir, capsys):
    out = tmp_path / "noise-pub"
    out.mkdir()
    (out / "notes.txt").write_text("mine, not the bank's")
    assert cli.main(["publish", str(bank_dir), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload to masterkey-filters/noise-pub:" in printed
    assert "notes.txt" not in printed and {"README.md", "config.json", "filters.safetensors"} <= set(printed.split())
    assert (out / "notes.txt").read_text() == "mine, not the bank's"


def test_cards_never_write_outside_the_output_folder(run, tmp_path, bank_dir):
    experiments = tmp_path / "experiments" / "transfer-matrix"
    experiments.mkdir(parents=True)
    results = {"experiment": "transfer-matrix", "model": "x", "summary": [], "runs": [], "table": [], "scale": {},
               "details": {"own_banks": {"/../../../../ESCAPED": str(bank_dir)}}}  # fmt: skip
    (experiments / "results.json").write_text(json.dumps(results))
    escaped = tmp_path / "ESCAPED-dw"
    result = run("cards", "--out", str(tmp_path / "out" / "cards"), "--experiments", str(tmp_path / "experiments"))
    assert result.returncode == 2 and "not a plain folder name" in result.stderr, result.stderr
    assert not escaped.exists() and not any(p.name.startswith("x-") for p in tmp_path.rglob("*-dw"))


def test_a_dataset_card_takes_the_bank_kept_beside_the_results_over_the_trained_folder(run, tmp_path, bank_dir):
    # a --retrain invocation trains the source networks again; the kept copy is the bank the read-back runs froze
    experiments = tmp_path / "experiments" / "transfer-matrix"
    kept = masterkey.FilterBank.from_tensors({"a": torch.randn(4, 1, 3, 3)})
    kept.save_pretrained(experiments / "banks" / "digits")
    results = {"experiment": "transfer-matrix", "model": "x", "summary": [], "runs": [], "table": [], "scale": {},
               "details": {"own_banks": {"digits": str(bank_dir)}}}  # fmt: skip
    (experiments / "results.json").write_text(json.dumps(results))
    result = run("cards", "--out", str(tmp_path / "cards"), "--experiments", str(tmp_path / "experiments"))
    assert result.returncode == 0, result.stderr
    card = masterkey.FilterBank.from_pretrained(tmp_path / "cards" / "x-digits-dw")
    assert torch.equal(card["a"], kept["a"])
    assert not torch.equal(card["a"], masterkey.FilterBank.from_pretrained(bank_dir)["a"])


def test_results_without_a_summary_are_a_typed_error(run, tmp_path):
    experiments = tmp_path / "experiments" / "source-size"
    experiments.mkdir(parents=True)
    (experiments / "results.json").write_text(json.dumps({"experiment": "source-size"}))
    result = run("cards", "--out", str(tmp_path / "cards"), "--experiments", str(tmp_path / "experiments"))
    assert result.returncode == 2 and "is not a results.json that `masterkey experiment` wrote" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_diagnosed_error_prints_no_traceback_from_a_real_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "masterkey.cli", "inspect", str(tmp_path / "no-such-bank")],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not found" in result.stderr


def test_python_dash_m_and_version():
    from masterkey.constants import LIBRARY_VERSION

    result = subprocess.run([sys.executable, "-m", "masterkey", "--version"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == f"masterkey {LIBRARY_VERSION}"


def test_inspect_shows_every_layer_and_how_well_the_keys_explain_it(capsys):
    assert cli.main(["inspect", "imagenet-lite0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.strip().split(" ")[0].isdigit()]
    assert len(rows) == 16 and "mean R²" in lines[1]
    first = rows[0].split()
    assert first[1] == "blocks.0.0.conv_dw" and first[2] == "3x3" and first[3] == "32"
    assert 0 < float(first[6]) <= 1 and first[-1] == "idealized-3x3"
