"""The ``masterkey`` command line.

Subcommands register themselves in :data:`COMMANDS` as ``name -> (add_arguments, run)``; ``run`` returns an exit
code. Errors masterkey diagnosed print as one line (no traceback) and exit with 2.

This is the one module that imports the rest of masterkey inside functions: each subcommand imports what it runs,
so that ``masterkey --help`` (and every parser) starts without importing torch or timm.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .constants import EXPERIMENT_NAMES, HUB_ORG, LIBRARY_VERSION, MAPPING_NAMES, SCALE_NAMES
from .errors import ArgumentError, MasterKeyError

__all__ = ["main", "COMMANDS"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is an integer from 0 to 2**32 - 1, got {text}")
    return value


def _out_dir(text: str) -> Path:
    """An output folder that exists or can be made: checked when the command line is read, before any work."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; pass a folder (it is created when missing)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} lies under the file {str(parent)!r}; pass a folder elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{str(parent)!r} is not writable; pass a folder you can write to")
    return path


def _add_extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="timm model name with a pretrained tag (convnext_tiny.fb_in1k), a timm Hub id "
                   "(hf-hub:org/model), or an architecture with --weights, --pretrained or --random; a torchvision "
                   "builder (torchvision:mobilenet_v2, with --weights, --pretrained or --random; "
                   "torchvision:mobilenet_v2.IMAGENET1K_V1 for torchvision's own weights); a transformers image model "
                   "(transformers:facebook/convnext-tiny-224[@revision], or transformers:FOLDER written by "
                   "save_pretrained)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--weights", help="local checkpoint to load first (safetensors or torch file, read weights-only; "
                   "for a torchvision builder every key and shape must fit)")
    g.add_argument("--pretrained", action="store_true", default=None,
                   help="the library's default pretrained weights of the architecture (timm: through the Hugging "
                   "Face cache; torchvision: through torch's hub cache)")
    g.add_argument("--random", dest="pretrained", action="store_false",
                   help="randomly initialised kernels, recorded as such: for baselines only")
    p.add_argument("--out", required=True, type=_out_dir, help="folder to write the bank to")
    p.add_argument("--source-dataset", help="dataset the weights were trained on")
    p.add_argument("--source-license", help="licence of the weights")
    p.add_argument("--no-reparameterize", action="store_true", help="refuse unfused multi-branch models")


def _run_extract(args: argparse.Namespace) -> int:
    from .extract import extract_filters

    info = {"source_dataset": args.source_dataset, "source_license": args.source_license}
    bank = extract_filters(args.model, pretrained=args.pretrained, weights=args.weights,
                           reparameterize=not args.no_reparameterize,
                           **{k: v for k, v in info.items() if v is not None})  # fmt: skip
    bank.save_pretrained(args.out)
    print(f"{bank}\nsaved to {args.out}")
    return 0


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("bank", help="Hub repo id, local folder, or built-in name (imagenet-lite0, universal-learned-8, ...)")
    p.add_argument("--into", help="timm model name to inject the bank into (prints the injection report)")
    p.add_argument("--num-classes", type=_positive_int, default=None, help="classes of the model's new head")
    p.add_argument("--strict", action="store_true", help="fail when any target conv is left untouched")
    p.add_argument("--mapping", choices=MAPPING_NAMES, default="exact",
                   help="exact: same layer names and shapes; depth: another architecture, by structure (kernel size, "
                   "feature-map scale, position at that scale); stage: the earlier rule, relative depth by module-path "
                   "stages; size: the same kernel size first, then stage")
    p.add_argument("--resize", choices=("geometric", "universal"), default="geometric",
                   help="how kernels of another size are made (depth mapping): crop/pad, or re-rendered universal key")


def _run_inspect(args: argparse.Namespace) -> int:
    from .analysis import layer_statistics
    from .hub import load_master_filters

    bank = load_master_filters(args.bank)
    print(bank)
    print(_layer_table(bank, layer_statistics(bank)))
    if args.into:
        from .inject import from_pretrained_filters

        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        model = from_pretrained_filters(args.into, bank, strict=args.strict, mapping=args.mapping, resize=args.resize,
                                        **kwargs)  # fmt: skip
        print(model.masterkey_report)
    return 0


def _layer_table(bank, rows: list[dict]) -> str:
    """One line per kernel: shape, depth, and how well the 8 universal keys explain it (mean R², share >= 0.5)."""
    lines = [f"{'#':>3}  {'layer':<40} {'kernel':>7} {'channels':>8} {'stride':>6} {'depth':>6} {'mean R²':>8} "
             f"{'R²>=0.5':>8}  keys"]  # fmt: skip
    for row in rows:
        kernel = "x".join(map(str, row["kernel_size"]))
        fitted = row["fitted"]
        r2 = f"{row['r2_mean']:.3f}" if fitted else "-"
        share = f"{row['share_r2_at_least']['0.5']:.1%}" if fitted else "-"
        keys = row["keys"] if fitted else "not fitted (non-square or even kernel)"
        lines.append(f"{row['index']:>3}  {row['name'][:40]:<40} {kernel:>7} {row['channels']:>8} "
                     f"{max(row['stride']):>6} {row['relative_depth']:>6.2f} {r2:>8} {share:>8}  {keys}")  # fmt: skip
    return "\n".join(lines)


def _add_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("bank", nargs="?", help="what to publish: a pretrained checkpoint (convnext_tiny.fb_in1k, "
                   "hf-hub:org/model, a torchvision builder with --weights, transformers:ORG/NAME: extracted first), "
                   "a bank folder, a bank's Hub id, or a built-in name")
    p.add_argument("--weights", help="with a torchvision builder (torchvision:mobilenet_v2): the checkpoint file to "
                   "extract from, read weights-only")
    p.add_argument("--repo-id", help="target Hub repo (default: MASTERKEY_HUB_ORG/<architecture>-<dataset>-dw for a "
                   "checkpoint, MASTERKEY_HUB_ORG/<folder name> for a bank)")
    p.add_argument("--out", required=True, type=_out_dir, help="folder to build the repo content in (e.g. "
                   "hub_cards/NAME); with --zoo, the folder that holds one such folder per checkpoint")
    p.add_argument("--zoo", metavar="ORG", help="publish the bank of every checkpoint of masterkey.publishing.ZOO "
                   "(an ImageNet checkpoint per supported family) as ORG/<architecture>-<dataset>-dw")
    p.add_argument("--list", action="store_true", help="with --zoo: print the checkpoints and target repos only")
    p.add_argument("--results", type=Path, help="card results JSON (see masterkey.publishing.load_card_results)")
    p.add_argument("--dry-run", action="store_true", help="build the folder and list what would be uploaded")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private (when it does not exist)")


def _is_checkpoint(name: str) -> bool:
    from . import _libraries, _timm
    from .hub import BUILTIN_BANKS

    if _libraries.is_library_name(name):  # torchvision's and transformers' models: extracted like a checkpoint
        return True
    return name not in BUILTIN_BANKS and not Path(name).exists() and _timm.names_pretrained_weights(name)


def _run_publish(args: argparse.Namespace) -> int:
    from .extract import extract_filters
    from .hub import check_upload, load_master_filters
    from .publishing import ZOO, load_card_results, publish_bank, publish_checkpoint, zoo_repo_name

    if args.zoo:
        plan = [(checkpoint, f"{args.zoo}/{zoo_repo_name(checkpoint)}") for checkpoint in ZOO]
        for checkpoint, repo_id in plan:
            if args.list:
                print(f"{checkpoint:40} -> {repo_id}")
                continue
            publish_checkpoint(checkpoint, repo_id, folder=args.out / repo_id.split("/")[1], dry_run=args.dry_run,
                               private=args.private or None)  # fmt: skip
            print(f"{'would upload' if args.dry_run else 'uploaded'} {checkpoint} to {repo_id}")
        return 0
    if args.bank is None:
        raise ArgumentError("Name what to publish (a checkpoint, a bank folder or Hub id), or pass --zoo ORG.")
    checkpoint = _is_checkpoint(args.bank)
    if args.weights and not checkpoint:
        raise ArgumentError(f"--weights goes with a model to extract (a torchvision builder such as "
                            f"torchvision:mobilenet_v2); {args.bank!r} is a bank already.")  # fmt: skip
    default = zoo_repo_name(args.bank) if checkpoint else args.out.name
    repo_id = args.repo_id or f"{HUB_ORG}/{default}"
    if not args.dry_run:
        check_upload(repo_id)  # offline, no token or a bad repo id: refused before the bank is built
    results, sections = load_card_results(args.results) if args.results else ([], [])
    bank = extract_filters(args.bank, weights=args.weights) if checkpoint else load_master_filters(args.bank)
    files = publish_bank(bank, repo_id, folder=args.out, results=results, card_kwargs={"sections": sections},
                         dry_run=args.dry_run, private=args.private or None)  # fmt: skip
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{bank}\n{verb} to {repo_id}:")
    for name, size in files:
        print(f"  {name:24} {size:>12,d} bytes")
    return 0


def _add_analyze(p: argparse.ArgumentParser) -> None:
    p.add_argument("bank", help="Hub repo id, local folder, or built-in name (imagenet-lite0, universal-learned-8, ...)")
    p.add_argument("--out", required=True, type=_out_dir, help="folder to write report.json and the PNG figures to")
    p.add_argument("--compare", help="a second bank (same forms) to compare with, layer by layer")
    p.add_argument("--keys", choices=("learned", "idealized"), default="learned", help="key set for 7x7 kernels")


def _run_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze_bank

    report = analyze_bank(args.bank, out_dir=args.out, compare=args.compare, keys=args.keys)
    summary = report["summary"]
    print(
        f"{report['bank']}: {summary['filters']} filters fitted in {summary['layers_fitted']} layers, "
        f"{summary['layers_skipped']} layers skipped (non-square or even)"
    )
    for size, row in summary["by_kernel_size"].items():
        shares = ", ".join(f"R^2>={t}: {v:.1%}" for t, v in row["share_r2_at_least"].items())
        chance = ", ".join(f"{v:.1%}" for v in report["chance"][size]["share_r2_at_least"].values())
        print(f"  {size}: {row['filters']} filters, {shares} (random filters: {chance})")
    print(f"wrote report.json and {len(report['figures'])} figures to {args.out}")
    return 0


def _add_cards(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=_out_dir, default="hub_cards", help="folder to write the Hub folders into")
    p.add_argument("--experiments", type=Path, help="experiments output folder whose results go on the cards")


def _run_cards(args: argparse.Namespace) -> int:
    from .research.cards import write_hub_cards

    for folder in write_hub_cards(args.out, experiments_dir=args.experiments):
        print(f"wrote {folder}")
    return 0


def _add_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=[*EXPERIMENT_NAMES, "all"], help="which experiment")
    p.add_argument("--scale", choices=list(SCALE_NAMES), help="quick (a few steps, the default), small or full; overrides "
                   "the config's scale")
    p.add_argument("--config", type=Path, help="JSON of ExperimentConfig fields (model, bank, datasets, ..., scale), "
                   "such as the config.json an experiment wrote")
    p.add_argument("--out", type=_out_dir, default="outputs/experiments", help="folder of the experiments' outputs")
    p.add_argument("--seeds", type=_seed, nargs="+", help="override the scale's seeds")
    p.add_argument("--cpu-threads", type=_positive_int, help="torch threads per run on CPU (1 on a busy machine)")
    p.add_argument("--resume", action="store_true",
                   help="keep runs that finished in --out with the same configuration (continue an interrupted run)")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="runs trained at a time, each in its own process (2 with --cpu-threads 1 on 2 CPU cores)")
    p.add_argument("--retrain", nargs="+", default=(), metavar="GLOB",
                   help="train only the runs whose folder names match these globs (e.g. '*__random-frozen__*'); "
                   "the other runs' records come from --earlier-results")
    p.add_argument("--earlier-results", type=Path, metavar="RESULTS_JSON",
                   help="an earlier results.json of the experiment, whose records stand in for the runs that "
                   "--retrain leaves out")


def _run_experiment(args: argparse.Namespace) -> int:
    from .research.experiments import run_experiment

    scale = args.scale or (None if args.config else "quick")  # a config brings its own scale
    for name in EXPERIMENT_NAMES if args.name == "all" else [args.name]:
        command = " ".join(part for part in (
            f"masterkey experiment {name}", args.config and f"--config {args.config}", scale and f"--scale {scale}",
            f"--out {args.out}", args.seeds and f"--seeds {' '.join(map(str, args.seeds))}",
            args.cpu_threads and f"--cpu-threads {args.cpu_threads}", args.resume and "--resume",
            args.jobs > 1 and f"--jobs {args.jobs}",
            args.retrain and "--retrain " + " ".join(shlex.quote(g) for g in args.retrain),
            args.earlier_results and f"--earlier-results {args.earlier_results}",
        ) if part)  # fmt: skip
        results = run_experiment(name, args.config, scale=scale, out_dir=args.out, seeds=args.seeds,
                                 cpu_threads=args.cpu_threads, resume=args.resume, jobs=args.jobs,
                                 retrain=args.retrain, earlier_results=args.earlier_results,
                                 command=command)  # fmt: skip
        print(f"\n{name} ({results['wall_time_s'] / 60:.1f} min): {args.out / name}")
        print("\n".join(results["table"]))
        if results["contrast_table"]:
            print("\npaired contrasts (same seeds):\n" + "\n".join(results["contrast_table"]))
    return 0


def _add_verdict(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path, help="an experiment's results.json written under an analysis plan "
                   "(docs/experiments/cross-family/cross-family/results.json)")


def _run_verdict(args: argparse.Namespace) -> int:
    from .research.experiments import read_results
    from .research.verdicts import plan_verdict

    print(plan_verdict(read_results(args.results)).markdown())
    return 0


def _add_pages(p: argparse.ArgumentParser) -> None:
    p.add_argument("docs", type=Path, nargs="?", default=Path("docs"),
                   help="the folder of Markdown pages whose <!-- results: PATH --> blocks to write (default: docs)")
    p.add_argument("--root", type=Path, default=Path("."), help="the folder the markers' paths are relative to")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 where a block differs from its file")


def _run_pages(args: argparse.Namespace) -> int:
    from .research.pages import stale_blocks, update_pages

    if args.check:
        stale = stale_blocks(args.docs, root=args.root)
        for page in stale:
            print(f"{page}: a results block differs from its results.json (run `masterkey pages {args.docs}`)")
        return 1 if stale else 0
    for page in update_pages(args.docs, root=args.root):
        print(f"wrote {page}")
    return 0


#: What ``masterkey list`` lists (``masterkey.catalog.NAME_KINDS``, which a test keeps equal to this).
LIST_KINDS = ("banks", "filters", "datasets", "zoo")


def _add_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=LIST_KINDS, help="banks: built-in banks (load_master_filters, --filters); filters: "
                   "what --filters takes; datasets: built-in datasets (--dataset_name); zoo: the checkpoints "
                   "`masterkey publish --zoo` publishes")
    p.add_argument("pattern", nargs="?", help="only the names matching this shell-style pattern ('imagenet-*')")


def _run_list(args: argparse.Namespace) -> int:
    from .catalog import NAME_FORMS, list_names

    names = list_names(args.kind, pattern=args.pattern)
    width = max([len("name"), *map(len, names)])
    print(f"{'name':<{width}}  description")
    for name, description in names.items():
        print(f"{name:<{width}}  {description}")
    if not names:
        print(f"(no {args.kind} match {args.pattern!r})")
    forms = NAME_FORMS.get(args.kind, ())
    if forms:
        print("\nalso:")
        width = max(len(form) for form, _ in forms)
        for form, meaning in forms:
            print(f"  {form:<{width}}  {meaning}")
    return 0


#: name -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "extract": ("extract the depthwise filter bank of a timm, torchvision or transformers model", _add_extract,
                _run_extract),
    "inspect": ("summarize a bank, optionally injecting it into a model", _add_inspect, _run_inspect),
    "publish": ("build a bank's Hub repo folder (card included) and push it", _add_publish, _run_publish),
    "cards": ("build the Hub folders of every bank masterkey publishes, results included", _add_cards, _run_cards),
    "experiment": ("run the paper's experiments (results.json, plots)", _add_experiment, _run_experiment),
    "pages": ("write the results blocks of the documentation pages from their results.json", _add_pages, _run_pages),
    "verdict": ("word an experiment's verdict by the rules of its analysis plan", _add_verdict, _run_verdict),
    "analyze": ("fit a bank to the 8 universal keys: report.json and PNG plots", _add_analyze, _run_analyze),
    "list": ("list the names masterkey knows: built-in banks, --filters specs, built-in datasets, the zoo", _add_list,
             _run_list),
}


class _ToStderr(logging.Handler):
    """Log records as plain lines on whatever ``sys.stderr`` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The ``masterkey`` command line: one subcommand with its arguments (``argv``, default the process's); returns
    the exit status: 0, 1 where a check found something (``pages --check``), 2 for bad input (one line on stderr,
    never a traceback).

    Example:
        >>> main(["verdict", "docs/experiments/cross-family/cross-family/results.json"])
        0
    """
    # the library logs what it does; the command line shows it, one plain line each, on stderr
    logger = logging.getLogger("masterkey")
    if not any(isinstance(h, _ToStderr) for h in logger.handlers):
        logger.addHandler(_ToStderr())
        logger.setLevel(logging.INFO)
    parser = argparse.ArgumentParser(prog="masterkey", description="Master key depthwise filters for DS-CNNs.")
    parser.add_argument("--version", action="version", version=f"masterkey {LIBRARY_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except MasterKeyError as e:
        print(f"masterkey {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`masterkey inspect ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a folder or file the system refused (permissions, disk full, ...): one line, no traceback
        print(f"masterkey {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
