"""The measured blocks of the results pages, generated from the experiments' ``results.json``.

A page marks a block with the results file it shows, relative to the repository root::

    <!-- results: docs/experiments/cross-family/cross-family/results.json -->
    ...generated; do not edit...
    <!-- /results -->

:func:`update_pages` writes each block again from its file (:func:`results_block`: the cells with their paired
differences to scratch, the plan's primary contrasts, the verdict its rules give, the other contrasts, how much sooner
each arm reaches from scratch's accuracy, and how to reproduce it); :func:`stale_blocks` lists the blocks that differ
from their file, which a docs test keeps empty, so that a number on a page is always the one its results hold. The
prose around a block stays the author's.

Example:
    >>> update_pages("docs", root=".")  # or: masterkey pages docs
    [PosixPath('docs/results/cross-family.md')]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ResultsFormatError
from .experiments import read_results, reproduce_text, tuning_table, wall_time_text
from .verdicts import VERDICT_RULES, plan_verdict

__all__ = ["results_block", "update_pages", "stale_blocks", "BLOCK"]

_logger = logging.getLogger(__name__)

#: A generated block: its opening marker names the results file, relative to the repository root.
BLOCK = re.compile(r"(?P<open><!-- results: (?P<path>[^\s>]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)", re.S)
#: A block, or a fenced code block (left as it is: a page may show a marker as an example).
_BLOCK_OR_FENCE = re.compile(r"(?P<fence>^```.*?^```)|" + BLOCK.pattern, re.S | re.M)


def results_block(results: Mapping[str, Any]) -> str:
    """The Markdown of one experiment's results (its ``results.json`` content) as a page shows it.

    Example:
        >>> from masterkey.research.experiments import read_results
        >>> print(results_block(read_results("docs/experiments/cross-family/regime/results.json")))
    """
    scale, runs = results["scale"], results["runs"]
    seeds = sorted({r["seed"] for r in runs})  # the runs' own: a tuning run uses the tuning seed, not the scale's
    named = ", ".join(map(str, seeds)) if len(seeds) <= 6 else f"{len(seeds)} seeds from {seeds[0]} to {seeds[-1]}"
    tuning = tuning_table(results)  # a pilot or sweep: one column per budget or rate, on the validation split
    scored = " scored on the validation split held out of training" if tuning else ""
    parts = [f"{len(runs)} runs (seeds {named}){scored}, scale `{scale['name']}` at {scale['resolution']} px; "
             f"{wall_time_text(results)}.", tuning or "\n".join(results["table"])]  # fmt: skip
    plan = (results.get("plan") or {}).get("plan")
    if plan and results.get("confirmatory_table"):
        parts += [f"The plan's primary contrasts ({len(results['confirmatory'])}, Holm-corrected; plan commit "
                  f"`{str(results['plan'].get('commit'))[:12]}`):", "\n".join(results["confirmatory_table"])]
        edited = results["plan"].get("edited_after")
        if edited:  # said where the numbers are read, not only in results.json and the log
            parts.append(f"⚠ The plan changed after the version in force ({'; '.join(edited)}): those changes are "
                         "not used; the contrasts and the verdict follow the plan commit above.")
        if results["experiment"] in VERDICT_RULES:  # worded afresh: results written before verdicts existed get one
            parts.append(plan_verdict(results).markdown())
    if results.get("contrast_table"):
        label = "Paired by seed" + (" (the plan's primary contrasts among them; any other is exploratory)" if plan
                                    else " (exploratory: no plan preceded this grid)")  # fmt: skip
        parts += [f"{label}:", "\n".join(results["contrast_table"])]
    if results.get("time_to_reach_table"):
        parts += ["How soon each arm reaches the accuracy from scratch ends at (same seed; exploratory):",
                  "\n".join(results["time_to_reach_table"])]  # fmt: skip
    parts.append(reproduce_text(results))
    return "\n\n".join(parts) + "\n"


def _blocks(page: Path, root: Path) -> tuple[str, str]:
    """The page's text as it is, and as its blocks generated afresh would make it."""
    text = page.read_text(encoding="utf-8")

    def generate(match: re.Match[str]) -> str:
        if match["fence"] is not None:
            return match["fence"]
        path = (root / match["path"]).resolve()
        if root.resolve() not in path.parents:  # a marker read from a page never reads outside the repository
            raise ResultsFormatError(f"{page}: the results marker {match['path']!r} points outside {root}.")
        return match["open"] + results_block(read_results(path)) + match["close"]

    return text, _BLOCK_OR_FENCE.sub(generate, text)


def stale_blocks(docs_dir: str | Path, *, root: str | Path = ".") -> list[Path]:
    """The Markdown pages under ``docs_dir`` whose generated blocks differ from their results files.

    Example:
        >>> stale_blocks("docs")
        []
    """
    root = Path(root)
    return [page for page in sorted(Path(docs_dir).rglob("*.md")) if len(set(_blocks(page, root))) > 1]


def update_pages(docs_dir: str | Path, *, root: str | Path = ".") -> list[Path]:
    """Write every generated block of the Markdown pages under ``docs_dir`` again from its results file (paths in the
    markers are relative to ``root``); returns the pages that changed.

    Raises:
        ResultsFormatError: a marker names a file that is missing, not a results.json, or outside ``root``.

    Example:
        >>> update_pages("docs")
        [PosixPath('docs/results/cross-family.md')]
    """
    changed = []
    for page in sorted(Path(docs_dir).rglob("*.md")):
        before, after = _blocks(page, Path(root))
        if after != before:
            page.write_text(after, encoding="utf-8")
            _logger.info("Wrote the results blocks of %s", page)
            changed.append(page)
    return changed
