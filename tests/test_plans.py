"""Analysis plans: the version in force is the one committed before the first test result, edits after it are
reported and never used, and the primary family is Holm-corrected."""

import json
import os
import subprocess

import pytest

from masterkey.errors import TrainingConfigError
from masterkey.research.plans import (
    AnalysisPlan,
    bh_adjust,
    confirmatory_contrasts,
    holm_adjust,
    mark_exploratory,
    plan_record,
    planned_experiment,
)

PLAN = {
    "experiment": "cross-family",
    "seeds": [11, 12, 13],
    "primary": [
        {"name": "bank - random", "a": ["m", "bank (frozen)"], "b": ["m", "random (frozen)"]},
        {"name": "bank - scratch", "a": ["m", "bank (frozen)"], "b": ["m", "from scratch"]},
    ],
    "cells": [["m", "from scratch"], ["m", "random (frozen)"], ["m", "bank (frozen)"]],
    "correction": "holm",
    "alpha": 0.05,
}


def _git(repo, *args, when=None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def _commit(repo, plan, when):
    (repo / "plan.json").write_text(json.dumps(plan))
    _git(repo, "add", "plan.json")
    _git(repo, "commit", "-q", "-m", "plan", when=when)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    return tmp_path


def test_the_plan_committed_before_the_first_result_is_in_force_and_later_edits_are_reported(repo):
    _commit(repo, PLAN, when=1_000_000)
    grown = {**PLAN, "seeds": [11, 12, 13, 14], "primary": PLAN["primary"][:1]}
    _commit(repo, grown, when=3_000_000)  # a commit after results existed: reported, not used
    record = plan_record(repo / "plan.json", first_result_at=2_000_000)
    assert record["status"] == "committed before the first test result"
    assert record["plan"].seeds == (11, 12, 13) and len(record["plan"].primary) == 2
    assert len(record["edited_after"]) == 1 and "after the first test result" in record["edited_after"][0]
    (repo / "plan.json").write_text(json.dumps({**PLAN, "alpha": 0.2}))  # and an edit never committed
    record = plan_record(repo / "plan.json", first_result_at=2_000_000)
    assert record["plan"].alpha == 0.05 and any("not committed" in e for e in record["edited_after"])


def test_a_plan_committed_only_after_the_first_result_leaves_everything_exploratory(repo):
    _commit(repo, PLAN, when=3_000_000)
    record = plan_record(repo / "plan.json", first_result_at=2_000_000)
    assert record["plan"] is None and "every contrast is exploratory" in record["status"]
    runs = [{"group": "m", "label": "from scratch", "seed": 11, "accuracy": 0.9}]
    assert mark_exploratory(runs, record["plan"])[0]["exploratory"] is True
    # before any test result, the newest commit is the plan
    assert plan_record(repo / "plan.json", first_result_at=None)["plan"].seeds == (11, 12, 13)


def test_a_plan_outside_git_or_missing_is_reported_or_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "plan.json").write_text(json.dumps(PLAN))
    record = plan_record(outside / "plan.json", first_result_at=1.0)
    assert record["plan"] is None and "no git repository" in record["status"]
    with pytest.raises(TrainingConfigError, match="does not exist"):
        plan_record(tmp_path / "nowhere.json", first_result_at=None)
    # which experiment a plan is about, read before anything is judged by it
    assert planned_experiment(outside / "plan.json") == "cross-family"
    (outside / "list.json").write_text("[1]")
    assert planned_experiment(outside / "list.json") is None
    (outside / "broken.json").write_text("{")
    with pytest.raises(TrainingConfigError, match="Cannot read the analysis plan"):
        planned_experiment(outside / "broken.json")


@pytest.mark.parametrize(
    "change, message",
    [({"seeds": []}, "seeds"), ({"primary": [{"a": ["m"]}]}, "primary"), ({"correction": "bonferroni"}, "correction"),
     ({"alpha": 1.5}, "alpha"), ({"extra": 1}, "unknown keys")],
)
def test_malformed_plans_are_refused_naming_the_field(change, message):
    with pytest.raises(TrainingConfigError, match=message):
        AnalysisPlan.from_dict({**PLAN, **change})


def test_holm_steps_down_and_benjamini_hochberg_steps_up_both_keeping_the_order():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    # Benjamini-Hochberg: the i-th smallest of m times m / i, non-decreasing in p, capped at 1; never above Holm
    assert bh_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert bh_adjust([0.9, 0.6]) == pytest.approx([0.9, 0.9])
    ps = [0.001, 0.2, 0.013, 0.04, 0.5, 0.011]
    assert all(q <= h + 1e-12 for q, h in zip(bh_adjust(ps), holm_adjust(ps)))
    assert holm_adjust([]) == []


def test_confirmatory_contrasts_use_the_plans_seeds_and_hold_only_after_correction():
    plan = AnalysisPlan.from_dict(PLAN)
    runs = []
    for seed, (scratch, random, bank) in {11: (0.90, 0.80, 0.95), 12: (0.91, 0.81, 0.955), 13: (0.92, 0.79, 0.94),
                                          99: (0.0, 0.0, 1.0)}.items():  # fmt: skip
        runs += [{"group": "m", "label": "from scratch", "seed": seed, "accuracy": scratch},
                 {"group": "m", "label": "random (frozen)", "seed": seed, "accuracy": random},
                 {"group": "m", "label": "bank (frozen)", "seed": seed, "accuracy": bank}]  # fmt: skip
    rows = confirmatory_contrasts(runs, plan)
    assert [r["pairs"] for r in rows] == [3, 3]  # seed 99 is not the plan's
    assert rows[0]["mean"] == pytest.approx((0.15 + 0.145 + 0.15) / 3)
    assert rows[0]["p_holm"] >= rows[0]["p"] and rows[0]["family_low"] < rows[0]["low"]
    assert rows[0]["holds"]  # bank - random: large and steady
    assert not rows[1]["holds"] and rows[1]["p_holm"] >= 0.05  # bank - scratch: +0.04, +0.045, +0.02 over 3 seeds
    marked = mark_exploratory(runs, plan)
    assert {r["seed"] for r in marked if r["exploratory"]} == {99}
