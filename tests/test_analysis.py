"""Bank analysis: statistics, similarity, generality by depth, figures and the ``masterkey analyze`` command."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from matplotlib.image import imread

import masterkey
from masterkey.analysis import (
    analyze_bank,
    chance_levels,
    compare_banks,
    explained_table,
    generality_by_depth,
    layer_statistics,
)
from masterkey.cli import main


@pytest.fixture(scope="module")
def bank():
    # real timm DS-CNN (random init) with 3x3 and 5x5 depthwise kernels
    return masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"), source_dataset="random init")


def _scaled(bank, scale, shift):
    """The same bank with every filter mapped to scale * filter + shift."""
    return masterkey.FilterBank.from_tensors(
        {name: scale * t + shift for name, t in bank.items()}, specs=bank.specs, source_model="scaled"
    )


def test_layer_statistics_describe_every_layer(bank):
    stats = layer_statistics(bank)
    assert [row["name"] for row in stats] == bank.names
    first = stats[0]
    flat = bank[bank.names[0]].reshape(first["channels"], -1).double()
    assert first["norm_mean"] == pytest.approx(flat.norm(dim=1).mean().item())
    assert first["mean_mean"] == pytest.approx(flat.mean(dim=1).mean().item())
    assert first["fitted"] and sum(first["key_usage"]) + first["constant_filters"] == first["channels"]
    assert 0 <= first["r2_quartiles"][0] <= first["r2_median"] <= first["r2_quartiles"][1] <= 1


def test_similarity_is_invariant_to_affine_maps_and_low_for_other_banks(bank):
    same = compare_banks(bank, _scaled(bank, -2.0, 0.3))
    assert [row["other"] for row in same] == [row["name"] for row in same]  # same depths pair up
    for row in same:
        assert row["similarity"] == pytest.approx(1.0, abs=1e-6)
        assert row["key_usage_divergence"] == pytest.approx(0.0, abs=1e-6)
    other = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))  # another random init
    rows = compare_banks(bank, other)
    assert all(row["similarity"] < 0.999 for row in rows)
    assert all(0.0 <= row["key_usage_divergence"] <= 1.0 for row in rows)
    assert all(0.0 < row["similarity_chance"] < 1.0 for row in rows)


def test_similarity_across_kernel_sizes_uses_the_centre_crop():
    keys5 = masterkey.universal_bank("idealized", size=5)
    padded = masterkey.FilterBank.from_tensors({"keys": torch.nn.functional.pad(keys5["universal_keys"], (1, 1, 1, 1))})
    (row,) = compare_banks(padded, keys5)
    assert row["compared_size"] == 5 and row["similarity"] == pytest.approx(1.0, abs=1e-6)


def test_generality_by_depth_covers_every_fitted_filter(bank):
    fit = masterkey.fit_universal(bank)
    rows = generality_by_depth(fit, comparison=compare_banks(bank, bank, fit=fit, other_fit=fit))
    assert [row["depth"] for row in rows] == ["early", "middle", "late"]
    assert sum(row["filters"] for row in rows) == fit.num_filters
    for row in rows:
        assert 0 <= row["key_usage_entropy"] <= 1 and 1 <= row["dominant_key"] <= 8
        assert row["similarity"] == pytest.approx(1.0, abs=1e-6)


def test_chance_levels_and_explained_table(bank):
    chance = chance_levels([3, 5])
    # random 3x3 filters live in 8 dimensions, so 8 keys explain much of them by chance; 5x5 ones far less
    assert chance["3x3"]["r2_mean"] > chance["5x5"]["r2_mean"]
    table = explained_table(bank)
    fit = masterkey.fit_universal(bank)
    assert f"{fit.share_above(0.9, kernel_size=3):.1%}" in table.splitlines()[2]


def test_analyze_bank_writes_report_and_figures(bank, tmp_path):
    report = analyze_bank(bank, out_dir=tmp_path, compare=_scaled(bank, 3.0, 0.0))
    names = {"keys.png", "key_usage.png", "r2_by_depth.png", "filters_first.png", "filters_last.png", "similarity.png"}
    assert set(report["figures"]) == names
    for name in names:
        image = imread(tmp_path / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 200
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["summary"]["filters"] == sum(spec.out_channels for spec in bank.specs)
    assert set(saved["chance"]) == {"3x3", "5x5"}
    assert len(saved["layers"]) == len(bank)
    assert all(row["similarity"] == pytest.approx(1.0, abs=1e-6) for row in saved["comparison"])
    assert saved["key_correlation"] == pytest.approx(
        (
            masterkey.universal_bank("learned")["universal_keys"]
            * masterkey.universal_bank("idealized")["universal_keys"]
        )
        .sum((1, 2, 3))
        .tolist(),
        abs=1e-6,
    )


def test_cli_analyze_builtin_banks(tmp_path, capsys):
    assert main(["analyze", "universal-learned-8", "--out", str(tmp_path), "--compare", "universal-idealized-8"]) == 0
    out = capsys.readouterr().out
    assert "7x7: 8 filters" in out and "R^2>=0.9: 100.0%" in out
    report = json.loads((tmp_path / "report.json").read_text())
    (row,) = report["comparison"]
    # every learned key finds its idealized model (and vice versa) at |r| >= 0.83
    assert row["similarity"] >= 0.83
    assert (tmp_path / "similarity.png").is_file() and not (tmp_path / "filters_last.png").exists()


def test_cli_analyze_reports_a_missing_bank(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_analyze_skips_band_kernels(tmp_path, capsys):
    bands = masterkey.extract_filters(timm.create_model("inception_next_atto"))
    bands.save_pretrained(tmp_path / "bank")
    assert main(["analyze", str(tmp_path / "bank"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    skipped = [row for row in report["layers"] if not row["fitted"]]
    assert skipped and report["summary"]["layers_skipped"] == len(skipped)
    assert all(row["kernel_size"][0] != row["kernel_size"][1] for row in skipped)
