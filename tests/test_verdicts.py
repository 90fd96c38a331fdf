"""Verdicts worded by the committed plans' rules: the rules find every contrast they need in the real plan files,
and the words follow the corrected contrasts (fed through the real confirmatory_contrasts on constructed runs)."""

import json
from pathlib import Path

import numpy as np
import pytest

from masterkey.cli import main
from masterkey.errors import ResultsFormatError
from masterkey.research.experiments import read_results
from masterkey.research.plans import AnalysisPlan, confirmatory_contrasts
from masterkey.research.verdicts import describe, outcome, plan_verdict

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "docs" / "experiments"


def _plan(folder: str) -> AnalysisPlan:
    return AnalysisPlan.from_dict(json.loads((PLANS / folder / "plan.json").read_text()), origin=folder)


def _results(plan: AnalysisPlan, effects: dict[tuple[str, str], float], experiment: str, *, noise: float = 0.002,
             **extra) -> dict:
    """Runs of every planned cell and seed: accuracy 0.80 + the cell's effect + noise (a standard deviation, seeded),
    then the real primary contrasts over them, as results.json holds them (with the fields every one has)."""
    rng = np.random.default_rng(0)
    runs = []
    for source in plan.sources or (None,):
        for group, label in sorted(plan.planned_cells()):
            for seed in plan.seeds:
                runs.append({"group": group, "label": label, "seed": seed, "source_seed": source,
                             "filters": "none" if label == "from scratch" else label,
                             "accuracy": 0.80 + effects.get((group, label), 0.0) + rng.normal(0, noise)})
    if plan.sources:  # one source per seed, as the experiments assign them
        runs = [r for r in runs if r["source_seed"] == plan.sources[plan.seeds.index(r["seed"]) % len(plan.sources)]]
    rows = confirmatory_contrasts(runs, plan)
    return {"experiment": experiment, "model": "per target", "scale": {}, "summary": [], "table": [],
            "confirmatory": rows, "runs": runs, "plan": {"plan": {"seeds": list(plan.seeds)}}, **extra}


CROSS_DETAILS = {"targets": ["tf_efficientnet_lite0", "mobilenetv2_100", "mobilenetv3_large_100", "convnext_atto"],
                 "banks": ["imagenet-lite0", "imagenet-mobilenetv2"],
                 "own_family": {"tf_efficientnet_lite0": "imagenet-lite0", "mobilenetv2_100": "imagenet-mobilenetv2"}}


def test_cross_family_words_follow_the_corrected_contrasts():
    plan = _plan("cross-family")
    # each bank helps its own family clearly; lite0's bank helps ConvNeXt too; nothing else differs
    effects = {("tf_efficientnet_lite0", "imagenet-lite0 (frozen)"): 0.03,
               ("mobilenetv2_100", "imagenet-mobilenetv2 (frozen)"): 0.03,
               ("convnext_atto", "imagenet-lite0 (frozen)"): 0.03}
    verdict = plan_verdict(_results(plan, effects, "cross-family", details=CROSS_DETAILS))
    assert verdict.complete
    assert verdict.headline == ("Verdict 4 holds within the family, and holds in part across families "
                                "(imagenet-lite0 in `convnext_atto`).")
    lite0 = next(s for s in verdict.statements if s.startswith("In `tf_efficientnet_lite0`"))
    assert "imagenet-lite0 helps and beats scratch" in lite0
    assert "the own family's bank (imagenet-lite0) is better than imagenet-mobilenetv2" in lite0
    v3 = next(s for s in verdict.statements if s.startswith("In `mobilenetv3_large_100`"))
    assert "neither helps nor costs (not shown)" in v3 and "Bonferroni interval" in v3
    # nothing differs: nothing holds, in any statement
    flat = plan_verdict(_results(plan, {}, "cross-family", details=CROSS_DETAILS))
    assert flat.headline == "Verdict 4 is not shown within the family, and is not shown across families."
    # one own-family bank helps, the other not: within the family "for ... only"
    half = plan_verdict(_results(plan, dict(list(effects.items())[:1]), "cross-family", details=CROSS_DETAILS))
    assert half.headline.startswith("Verdict 4 holds within the family for imagenet-lite0 in `tf_efficientnet_lite0` "
                                    "only, and is not shown across families")
    assert not any("holds positive" in s for s in flat.statements)


def test_a_cost_is_worded_as_a_cost():
    plan = _plan("cross-family")
    effects = {("mobilenetv3_large_100", "imagenet-mobilenetv2 (frozen)"): -0.03}
    verdict = plan_verdict(_results(plan, effects, "cross-family", details=CROSS_DETAILS))
    v3 = next(s for s in verdict.statements if s.startswith("In `mobilenetv3_large_100`"))
    assert "imagenet-mobilenetv2 costs" in v3 and "holds negative" in v3


def test_verdict_1_credits_the_filters_only_where_bank_minus_random_holds_and_counts_unconverged_scratch():
    plan = _plan("confirm-verdict-1")
    # on animal-mnist the bank beats scratch and random; on digits it beats scratch only as frozen random does
    effects = {("animal-mnist", "imagenet-lite0 (frozen)"): 0.03,
               ("digits", "imagenet-lite0 (frozen)"): 0.03, ("digits", "random (frozen)"): 0.03}
    config = {"bank": "imagenet-lite0", "datasets": ["digits", "animal-mnist"]}
    results = _results(plan, effects, "transfer-matrix", config=config)
    for r in results["runs"]:
        r["converged"] = not (r["group"] == "digits" and r["label"] == "from scratch" and r["seed"] in plan.seeds[:2])
    verdict = plan_verdict(results)
    assert verdict.headline == "Verdict 1 holds on digits and animal-mnist."
    digits, animal = verdict.statements
    assert "not credited to the filters rather than freezing" in digits
    assert "from scratch did not converge in 2 of its runs" in digits
    assert "credited to the filters (bank − random holds positive" in animal and "converge" not in animal


def test_verdict_2_holds_only_where_both_depths_meet_both_conditions():
    plan = _plan("confirm-verdict-2")
    pointwise_falls = {(g, n): -0.05 for g in ("AnB pointwise", "BnB pointwise") for n in ("n=8", "n=16")}
    # with 3 source networks the interval has 2 degrees of freedom at level 0.05 / 8: only small noise rules out 1 point
    verdict = plan_verdict(_results(plan, pointwise_falls, "layer-split", noise=0.0005))
    assert verdict.headline == "Verdict 2 holds.", verdict.statements
    assert all("cost less than 1 point" in s and "the pointwise layers are the more task-bound" in s
               for s in verdict.statements)
    # depthwise layers that cost 2 points at n=16: the verdict no longer holds, and says where its conditions do
    costly = {**pointwise_falls, ("AnB depthwise", "n=16"): -0.02}
    verdict = plan_verdict(_results(plan, costly, "layer-split", noise=0.0005))
    assert verdict.headline == "Verdict 2 is not shown (its conditions hold at n=8 only).", verdict.headline
    assert "cost — AnB depthwise − scratch holds negative" in verdict.statements[0]


def test_verdict_3_draws_nothing_on_source_size_when_the_positive_control_fails():
    plan = _plan("confirm-verdict-3")
    group = "digits, 288 training images"
    larger = {(group, "100% of animal-mnist (8000 images)"): 0.03}
    blind = plan_verdict(_results(plan, larger, "source-size"))
    assert blind.headline == "Verdict 3 cannot be judged: the target cannot tell good filters from bad here."
    verdict = plan_verdict(_results(plan, {**larger, (group, "imagenet-lite0 (frozen)"): 0.05}, "source-size"))
    assert verdict.headline == "Verdict 3 holds: a larger source gives better filters within one domain."
    assert any(s.startswith("Filters from the largest share beat frozen random filters") for s in verdict.statements)


def test_describe_states_the_bonferroni_bounds_where_a_contrast_is_not_shown():
    row = {"holds": False, "mean": 0.004, "family_low": -0.012, "family_high": 0.020, "p_holm": 0.6,
           "complete": False, "pairs": 3}
    assert outcome(row) == "not shown"
    assert describe(row) == ("not shown (+0.004; the Bonferroni interval [-0.012, +0.020] rules out effects outside "
                             "it, 3 pairs: incomplete)")


def test_results_without_a_plan_or_rules_or_with_another_plans_contrasts_are_refused(tmp_path, capsys):
    with pytest.raises(ResultsFormatError, match="no plan was in force"):
        plan_verdict({"experiment": "cross-family", "runs": []})
    with pytest.raises(ResultsFormatError, match="No verdict rules for the experiment 'regime'"):
        plan_verdict({"experiment": "regime"})
    other = _results(_plan("confirm-verdict-3"), {}, "cross-family", details=CROSS_DETAILS)
    with pytest.raises(ResultsFormatError, match="names no primary contrast 'tf_efficientnet_lite0: imagenet-lite0"):
        plan_verdict(other)
    # the command line: one line, exit 2; and the verdict as Markdown for a good file
    bad = tmp_path / "results.json"
    bad.write_text("[1, 2]")
    assert main(["verdict", str(bad)]) == 2
    assert "is not a results.json" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_results(_plan("confirm-verdict-3"), {}, "source-size")))
    assert main(["verdict", str(good)]) == 0
    assert capsys.readouterr().out.startswith("**Verdict 3 cannot be judged")


def test_every_committed_results_json_reads_back_and_other_json_is_refused_by_name(tmp_path):
    committed = [p for p in PLANS.rglob("results.json") if not {"runs", "sources"} & set(p.relative_to(PLANS).parts)]
    assert len(committed) >= 11  # earlier versions and pilots too, not only the ones the cards read
    for path in committed:  # every experiment's results under docs/experiments, through the one reader
        assert read_results(path)["experiment"] == json.loads(path.read_text())["experiment"]
    run_record = next(PLANS.rglob("runs/*/results.json"))  # a single run's own results: not an experiment's
    with pytest.raises(ResultsFormatError, match="is not a results.json that `masterkey experiment` wrote .no 'experiment'"):
        read_results(run_record)
    truncated = tmp_path / "results.json"
    truncated.write_text(committed[0].read_text()[:500])
    with pytest.raises(ResultsFormatError, match="cannot be read"):
        read_results(truncated)
    with pytest.raises(ResultsFormatError, match="of the experiment 'layer-split' .it is 'transfer-matrix''s"):
        read_results(PLANS / "transfer-matrix" / "results.json", experiment="layer-split")


def test_results_pages_blocks_are_written_from_their_results_and_a_changed_number_is_caught(tmp_path, capsys):
    """A page's marked block is generated from the results.json it names (here the real cross-family regime pilot and
    a planned grid with its verdict); a number edited by hand makes it stale until it is written again."""
    import shutil

    from masterkey.research.pages import stale_blocks, update_pages

    pilot = tmp_path / "experiments" / "regime" / "results.json"
    pilot.parent.mkdir(parents=True)
    shutil.copy(PLANS / "cross-family" / "regime" / "results.json", pilot)
    grid = tmp_path / "experiments" / "grid" / "results.json"
    grid.parent.mkdir(parents=True)
    planned = _results(_plan("cross-family"), {("convnext_atto", "imagenet-lite0 (frozen)"): 0.03}, "cross-family",
                       details=CROSS_DETAILS, noise=0.002)
    from masterkey.research.experiments.tables import confirmatory_table

    planned.update(scale={"name": "full", "seeds": list(_plan("cross-family").seeds), "resolution": 64},
                   table=["| group | filters |", "|---|---|"], wall_time_s=60, command="masterkey experiment x",
                   confirmatory_table=confirmatory_table(planned["confirmatory"], _plan("cross-family")).splitlines())
    planned["plan"] = {"plan": {"seeds": list(_plan("cross-family").seeds)}, "commit": "0123456789abcdef",
                       "edited_after": ["commit fedcba987654 after the first test result"]}
    grid.write_text(json.dumps(planned))
    page = tmp_path / "docs" / "results" / "page.md"
    page.parent.mkdir(parents=True)
    prose = "# A page\n\nThe author's words.\n\n"
    prose += "```markdown\n<!-- results: experiments/example/results.json -->\n<!-- /results -->\n```\n\n"  # an example
    page.write_text(prose + "<!-- results: experiments/regime/results.json -->\nold\n<!-- /results -->\n\nMore words.\n\n"
                    "<!-- results: experiments/grid/results.json -->\n<!-- /results -->\n")
    assert stale_blocks(tmp_path / "docs", root=tmp_path) == [page]
    assert update_pages(tmp_path / "docs", root=tmp_path) == [page]
    text = page.read_text()
    assert text.startswith(prose) and "More words." in text and "old\n" not in text
    real = json.loads(pilot.read_text())
    # the pilot's runs as one row per target and one column per budget, the smallest converged budget last
    for group in {r["group"] for r in real["runs"]}:
        runs = sorted((r for r in real["runs"] if r["group"] == group), key=lambda r: r["x"])
        cells = [f"{r['accuracy']:.3f}" + (" (converged)" if r["converged"] else "") for r in runs]
        smallest = next((str(r["x"]) for r in runs if r["converged"]), "none")
        assert f"| {group} | {' | '.join(cells)} | {smallest} |" in text
    assert "**Verdict 4 is not shown within the family, and holds in part across families (imagenet-lite0 in " \
           "`convnext_atto`).**" in text
    assert "plan commit `0123456789ab`" in text
    assert "⚠ The plan changed after the version in force (commit fedcba987654 after the first test result): " \
        "those changes are not used" in text
    assert stale_blocks(tmp_path / "docs", root=tmp_path) == [] and update_pages(tmp_path / "docs", root=tmp_path) == []
    # a number changed by hand is caught, by the command line too
    first = f"{real['runs'][0]['accuracy']:.3f}"
    assert first in text
    page.write_text(text.replace(first, "0.999", 1))
    assert main(["pages", str(tmp_path / "docs"), "--root", str(tmp_path), "--check"]) == 1
    assert "differs from its results.json" in capsys.readouterr().out
    assert main(["pages", str(tmp_path / "docs"), "--root", str(tmp_path)]) == 0 and page.read_text() == text
    # a marker naming a missing file, or one outside the repository: one typed error each
    page.write_text("<!-- results: experiments/none/results.json -->\n<!-- /results -->\n")
    with pytest.raises(ResultsFormatError, match="cannot be read"):
        update_pages(tmp_path / "docs", root=tmp_path)
    page.write_text("<!-- results: ../outside/results.json -->\n<!-- /results -->\n")
    with pytest.raises(ResultsFormatError, match="points outside"):
        update_pages(tmp_path / "docs", root=tmp_path)


def test_a_sweeps_block_has_one_column_per_rate_with_the_chosen_rate_in_bold():
    from masterkey.research.experiments import tuning_table

    sweep = json.loads((PLANS / "lr-sweep" / "results.json").read_text())
    table = tuning_table(sweep).splitlines()
    rates = sorted({r["learning_rate"] for r in sweep["runs"]})
    assert len(table) == 2 + len({r["group"] for r in sweep["runs"]}) and table[0].count("|") == len(rates) + 4
    for line in table[2:]:
        key, arm = line.split(" | ")[0].lstrip("| "), line.split(" | ")[1]
        chosen = sweep["details"]["best"][key][arm]
        runs = [r for r in sweep["runs"] if r["group"] == f"{key}: {arm}" and r["learning_rate"] == chosen]
        assert f"**{sum(r['accuracy'] for r in runs) / len(runs):.3f}**" in line and line.count("**") == 2
