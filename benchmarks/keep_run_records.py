"""Keep the records of an experiment folder's finished runs (each run's ``results.json`` and ``run_config.json``)
beside its committed results, as they finish, so that a multi-day experiment can be committed part way and resumed
from a fresh clone or another machine: ``--resume`` reads a run back from these two files.

Only runs under ``<part>/runs/`` are kept: a source network's folder (``<part>/sources/``) holds its weights, which
are not committed, so it trains again where its folder is gone (and the runs using its filters with it). A run still
training (no ``results.json`` yet) is left out. A record that changed (the run trained again) replaces the kept one.

    python benchmarks/keep_run_records.py outputs/cross-family docs/experiments/cross-family

``--restore`` copies the other way, where a run's folder lacks them (never over a run in ``outputs``):

    python benchmarks/keep_run_records.py --restore docs/experiments/cross-family outputs/cross-family
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

RECORD_FILES = ("results.json", "run_config.json")


def keep_run_records(source: Path, dest: Path, *, restore: bool = False) -> dict[str, list[str]]:
    """Copy every finished run's record files from ``source/<part>/runs/<run>/`` to ``dest/<part>/runs/<run>/``;
    returns the run folders (relative to ``source``) ``added`` and ``updated``. With ``restore``, a run that
    already has a ``results.json`` or ``run_config.json`` in ``dest`` is left as it is.

    Example:
        >>> found = keep_run_records(Path("outputs/cross-family"), Path("docs/experiments/cross-family"))
        >>> found["added"]  # the runs that finished since the last time: commit them
        ['lr-sweep/runs/convnext_atto-from-scratch__lr-0.016__seed5100']
    """
    if not source.is_dir():
        raise SystemExit(f"{source} is not a folder: name the experiment folder whose runs/ to keep.")
    found: dict[str, list[str]] = {"added": [], "updated": []}
    for results in sorted(source.glob("*/runs/*/results.json")):
        run = results.parent
        if not (run / "run_config.json").is_file():
            continue  # not a finished masterkey run
        relative = run.relative_to(source)
        target = dest / relative
        kept = [target / name for name in RECORD_FILES]
        if restore and any(path.exists() for path in kept):
            continue  # the run's own files are the truth in outputs
        if all(path.is_file() for path in kept) and all(
                filecmp.cmp(run / name, target / name, shallow=False) for name in RECORD_FILES):  # fmt: skip
            continue
        found["updated" if any(path.is_file() for path in kept) else "added"].append(relative.as_posix())
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            shutil.copy2(run / name, target / name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the experiment folder whose runs/ records to copy")
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
