"""Keep the records of an experiment folder's finished runs (each run's ``results.json`` and ``run_config.json``)
beside its committed results, as they finish, so that a multi-day experiment can be committed part way and resumed
from a fresh clone or another machine: ``--resume`` reads a run back from these two files.

A source network (``<part>/sources/<name>/``) is kept by its records and its depthwise bank (``bank-all/``, extracted
from the weights its ``results.json`` names by their SHA-256), and by its weights (about 14 MB for lite0) only where a
run uses them beyond the bank (the layer split's pointwise control): an experiment reads it back from these. A source
whose weights are used but not kept trains again, and the runs using its filters are read back where it trains to the
same bytes (each records its source's weights hash; see docs/guides/experiments.md). A source whose bank has not
been extracted from its current weights yet is left out, as is a run still training (no ``results.json`` yet). A
record that changed (the run trained again) replaces the kept one.

    python benchmarks/keep_run_records.py outputs/cross-family docs/experiments/cross-family

``--restore`` copies the other way, where a run's folder lacks them (never over a run in ``outputs``):

    python benchmarks/keep_run_records.py --restore docs/experiments/cross-family outputs/cross-family
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

RECORD_FILES = ("results.json", "run_config.json")
SOURCE_BANK = "bank-all"  # a source network's depthwise bank (masterkey.research.experiments.runner.SOURCE_BANK_DIR)
WEIGHTS = "model.safetensors"  # its weights, kept only where a run uses them beyond the bank (with timm's config.json)


def keep_run_records(source: Path, dest: Path, *, restore: bool = False) -> dict[str, list[str]]:
    """Copy every finished run's record files from ``source/<part>/runs/<run>/`` to ``dest/<part>/runs/<run>/``, and
    every finished source network's records and bank from ``source/<part>/sources/<name>/``; returns the folders
    (relative to ``source``) ``added`` and ``updated``. With ``restore``, a folder that already has a ``results.json``
    or ``run_config.json`` in ``dest`` is left as it is.

    Example:
        >>> found = keep_run_records(Path("outputs/cross-family"), Path("docs/experiments/cross-family"))
        >>> found["added"]  # the runs that finished since the last time: commit them
        ['lr-sweep/runs/convnext_atto-from-scratch__lr-0.016__seed5100']
    """
    if not source.is_dir():
        raise SystemExit(f"{source} is not a folder: name the experiment folder whose runs/ to keep.")
    found: dict[str, list[str]] = {"added": [], "updated": []}
    finished = sorted([*source.glob("*/runs/*/results.json"), *source.glob("*/sources/*/results.json")])
    for results in finished:
        run = results.parent
        if not (run / "run_config.json").is_file():
            continue  # not a finished masterkey run
        names = [*RECORD_FILES]
        if run.parent.name == "sources":
            weights = _recorded_weights(run)
            bank = _bank_files(run, weights)
            if bank is None:
                continue
            names += bank + ([WEIGHTS, "config.json"] if _weights_used(run, weights) else [])
        relative = run.relative_to(source)
        target = dest / relative
        if restore and any((target / name).exists() for name in RECORD_FILES):
            continue  # the run's own files are the truth in outputs
        if all((target / name).is_file() and filecmp.cmp(run / name, target / name, shallow=False) for name in names):
            continue
        found["updated" if any((target / name).is_file() for name in RECORD_FILES) else "added"].append(
            relative.as_posix())
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / name, target / name)
    return found


def _recorded_weights(folder: Path) -> str | None:
    """The SHA-256 of its weights a finished network's ``results.json`` records (``None`` where it records none)."""
    try:
        digest = json.loads((folder / "results.json").read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def _bank_files(folder: Path, weights: str | None) -> list[str] | None:
    """The files of a source network's bank (relative to its folder), where the bank was extracted from the weights
    its ``results.json`` names (``weights``); ``None`` where it was not (yet), or where that hash is not recorded."""
    try:
        extracted_from = json.loads((folder / SOURCE_BANK / "config.json").read_text()).get("source_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    if weights is None or extracted_from != weights:
        return None
    return sorted(p.relative_to(folder).as_posix() for p in (folder / SOURCE_BANK).iterdir() if p.is_file())


def _weights_used(folder: Path, weights: str) -> bool:
    """Whether a run of the source network's experiment part uses its weights beyond its bank (the layer split's
    pointwise control, ``pointwise:<folder>:<n>``), and the weights are the ones its ``results.json`` names
    (``weights``): then they are kept too, or every fresh clone would train the network again before those runs
    could be read back."""
    used = f"{os.sep}sources{os.sep}{folder.name}:"
    for config in folder.parent.parent.glob("runs/*/run_config.json"):
        try:
            filters = json.loads(config.read_text()).get("filters")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(filters, str) and filters.startswith("pointwise:") and used in filters:
            break
    else:
        return False
    return (folder / WEIGHTS).is_file() and hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest() == weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the experiment folder whose runs' and sources' records to copy")
    parser.add_argument("dest", type=Path, help="where to keep them (the same layout)")
    parser.add_argument("--restore", action="store_true", help="copy committed records back into an outputs "
                        "folder, never over a run there")  # fmt: skip
    args = parser.parse_args(argv)
    found = keep_run_records(args.source, args.dest, restore=args.restore)
    for kind, runs in found.items():
        for run in runs:
            print(f"{kind}: {run}")
    print(f"{len(found['added'])} added, {len(found['updated'])} updated ({args.source} -> {args.dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
