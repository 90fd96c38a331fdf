"""The result cards: every Hub folder masterkey builds from what its experiments measured (the research wing).

- :func:`experiment_card_results`: the experiments' ``results.json`` (:func:`experiment_results_paths`) as
  ``EvalResult`` rows and Markdown sections;
- :func:`write_universal_cards`: the folders of the learned and idealized universal keys;
- :func:`write_hub_cards` (``masterkey cards``): every bank masterkey publishes, results included.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub import EvalResult

from ..analysis import explained_table
from ..bank import FilterBank
from ..constants import (
    CITATION_SCALE_SPACE,
    CITATION_UNIVERSAL,
    REFERENCE_LICENSE_URL,
    REFERENCE_LICENSOR,
    REFERENCE_REPOSITORY,
)
from ..errors import ResultsFormatError
from ..hub import load_master_filters
from ..keys import (
    IDEALIZED_SIGMAS,
    KEY7_ALPHA,
    KEY_KINDS,
    KEY_MODELS,
    KEY_NAMES,
    LEARNED_SIZE,
    NUM_KEYS,
    key_correlation,
    universal_bank,
)
from ..names import FITTED_PREFIX, canonical_filters
from ..publishing import publish_bank
from ..sources import IMAGENET_SOURCES
from ..training import BUILTIN_DATASETS
from .experiments import (
    LEARNED_LOSS_SHARE,
    TUNING_EXPERIMENTS,
    contrast_table,
    format_difference,
    markdown_table,
    paired_contrasts,
    read_results,
    reproduce_text,
    results_chance,
    summarize,
    wall_time_text,
)

__all__ = ["write_hub_cards", "write_universal_cards", "experiment_card_results", "CardResults", "one_per_dataset",
           "BANK_METRIC", "SCRATCH_METRIC"]

_logger = logging.getLogger(__name__)

#: A folder name read from a results file: plain, so it never leaves the output folder.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

#: The Results section of a bank's card before any experiment measured it: ``masterkey cards --experiments DIR`` puts
#: the results of every experiment that trained with ``--filters <spec>`` in its place.
_NOT_MEASURED = (
    "**Not measured yet.** No experiment in the results this card was built from trained with this bank "
    "(`{spec}`). Run one with it (e.g. `masterkey experiment transfer-matrix --config CONFIG` whose `extra_banks` "
    "name `{spec}`), then `masterkey cards --experiments DIR` puts its results here."
)


def write_hub_cards(out_dir: str | Path, *, experiments_dir: str | Path | None = None) -> list[Path]:
    """Build the Hub folder (filters, config, card) of every bank masterkey publishes, with the experiments' results
    on the cards when ``experiments_dir`` holds them (a card without any says so in its Results section): the ImageNet
    ``tf_efficientnet_lite0/1/2`` and torchvision ``mobilenet_v2`` banks, the learned and
    idealized universal keys, and the banks a transfer-matrix experiment trained on the built-in datasets (the
    planned one where there is one: :func:`dataset_banks_results`).

    Example:
        >>> write_hub_cards("hub_cards", experiments_dir="outputs/experiments")  # or: masterkey cards --out hub_cards
    """
    out_dir = Path(out_dir)

    def publish(bank: FilterBank, name: str, spec: str, sections: list[tuple[str, str]]) -> Path:
        found = experiment_card_results(experiments_dir, spec) if experiments_dir else CardResults([], "", [])
        results_text = found.table or _NOT_MEASURED.format(spec=spec)  # the place the experiments' results go
        publish_bank(bank, folder=out_dir / name, results=found.results,
                     card_kwargs={"sections": [*sections, *found.sections], "results_text": results_text},
                     dry_run=True)  # fmt: skip
        return out_dir / name

    written, lite0_explained = [], None
    for source in IMAGENET_SOURCES.values():  # the packaged ImageNet banks: lite0, lite1, lite2, mobilenetv2
        bank = load_master_filters(source.bank_name)
        table = explained_table(bank)  # slow-ish (a fit and a chance baseline): lite0's is computed once for two cards
        lite0_explained = table if source.variant == "lite0" else lite0_explained
        sections = [*source.card_sections(), ("What the 8 universal keys explain", table)]
        written.append(publish(bank, source.folder_name, source.bank_name, sections))
    written += write_universal_cards(out_dir, experiments_dir=experiments_dir, lite0_explained=lite0_explained)
    matrix = dataset_banks_results(experiments_dir) if experiments_dir else None
    if matrix is not None:
        data = read_results(matrix, experiment="transfer-matrix")
        try:
            own_banks = dict(data["details"]["own_banks"])
        except (KeyError, TypeError, ValueError):
            raise ResultsFormatError(f"{matrix} has no details.own_banks mapping; run transfer-matrix again.") from None
        for dataset, folder in own_banks.items():
            name = f"{data['model']}-{dataset}-dw"
            if not _SAFE_NAME.fullmatch(name) or ".." in name:  # a name read from a file never leaves out_dir
                raise ResultsFormatError(
                    f"{matrix} names a bank {name!r} that is not a plain folder name; the transfer-matrix results "
                    "name their model and datasets with letters, digits, '.', '_' and '-' only."
                )
            # the copy kept beside the results first: it is the bank their runs froze, also where a later
            # invocation (--retrain reads runs back) trained the source networks again; else the trained bank itself
            kept = matrix.parent / "banks" / dataset
            if not Path(folder).is_dir() and not kept.is_dir():
                raise ResultsFormatError(
                    f"The bank transfer-matrix trained on {dataset!r} is neither at {folder} nor kept at {kept}; run "
                    "`masterkey experiment transfer-matrix` again (it keeps its banks beside its results)."
                )
            bank = load_master_filters(kept if kept.is_dir() else folder)
            if not bank.config.get("source_license") and dataset in BUILTIN_DATASETS:  # banks from before licences
                bank = FilterBank(dict(bank.items()), {**bank.config, "source_license": BUILTIN_DATASETS[dataset].license})
            spec = _recorded_spec(data["runs"], folder)
            written.append(publish(bank, name, spec, [("What the 8 universal keys explain", explained_table(bank))]))
    return written


def dataset_banks_results(experiments_dir: str | Path) -> Path | None:
    """The transfer matrix whose dataset banks the cards publish: one run under an analysis plan in force (verdict 1's
    confirmatory rerun, ``confirm-verdict-1/transfer-matrix/``) over the exploratory ``transfer-matrix/``; ``None``
    without either. Its banks are the first source network's (``banks/<dataset>``); where the arm had several source
    networks, the card's rows span them all and say so.

    Example:
        >>> dataset_banks_results("docs/experiments")
        PosixPath('docs/experiments/transfer-matrix/results.json')
    """
    found: list[tuple[bool, Path]] = []
    for path in experiment_results_paths(experiments_dir):
        data = read_results(path)
        if data["experiment"] == "transfer-matrix":
            found.append((bool((data.get("plan") or {}).get("plan")), path))
    planned = [p for is_planned, p in found if is_planned]
    return (planned or [p for _, p in found] or [None])[0]


def _recorded_spec(runs: list[Mapping[str, Any]], folder: str) -> str:
    """The ``filters`` spec under which ``runs`` recorded the source network's bank at ``folder``
    (``<experiment>/sources/<network>/bank-all``): a run read back from earlier results (``--retrain``) names it inside
    the experiment folder it ran in, which can be another than the one that trained ``folder``."""
    path = Path(folder)
    if len(path.parents) < 3:
        return folder
    inside = path.relative_to(path.parents[2])  # sources/<network>/bank-all
    for record in runs:
        recorded, run = record.get("filters"), record.get("run")
        if isinstance(recorded, str) and run and Path(recorded) == Path(run).parent.parent / inside:
            return recorded
    return folder


class CardResults(NamedTuple):
    """What the experiments give one bank's card: ``model-index`` rows, a results table for the card's text (each
    number beside its from-scratch baseline, the paired difference and chance), and one section per experiment."""

    results: list[EvalResult]
    table: str
    sections: list[tuple[str, str]]


_RESULTS_HEADER = (
    "Accuracy of downstream models trained with this bank frozen in their depthwise convolutions (test split, mean "
    "± std over seeds), beside the same model trained from scratch with the same seeds, the paired difference with "
    "its 95% interval (bold where it excludes 0) and chance (1 / classes). Measured by `masterkey experiment`; "
    "the sections below hold each experiment's whole table and the command that reproduces it. The metadata "
    "(`model-index`) gives one result per dataset, the primary arm of an analysis plan where there is one, with "
    "from scratch's accuracy beside it; arms a plan did not name, and every result of a grid no plan preceded, are "
    "marked exploratory.\n\n"
    "| experiment | target | model | arm | accuracy | from scratch | Δ vs scratch, 95% CI | chance | seeds |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


#: The two metrics of every ``model-index`` entry a card gets from an experiment: the bank's accuracy, and from
#: scratch's with the same seeds beside it (the Hub shows both in the entry's table).
BANK_METRIC = "accuracy, this bank frozen"
SCRATCH_METRIC = "accuracy, from scratch (same seeds)"


#: Folders inside an experiment's folder that hold its runs' and source networks' own records, and kept banks
_RUN_FOLDERS = frozenset({"runs", "sources", "banks"})


def experiment_results_paths(experiments_dir: str | Path) -> list[Path]:
    """Every experiment's ``results.json`` under ``experiments_dir``: one folder down (``transfer-matrix/``), or two
    where a folder without results of its own keeps an experiment's parts together (``cross-family/cross-family/``,
    ``confirm-verdict-1/lr-sweep/``); not the folders an experiment with results of its own keeps inside its folder
    (earlier versions, its pilot), and never a single run's own ``results.json`` (under ``runs/``, ``sources/``,
    ``banks/``).

    Example:
        >>> [p.relative_to("docs/experiments").as_posix() for p in experiment_results_paths("docs/experiments")][:2]
        ['across-architectures/results.json', 'cross-family/regime/results.json']
    """
    folder = Path(experiments_dir)
    parts = (p for p in folder.glob("*/*/results.json") if not (p.parent.parent / "results.json").is_file())
    return sorted(p for p in (*folder.glob("*/results.json"), *parts)
                  if not _RUN_FOLDERS & {p.parent.name, p.parent.parent.name})  # fmt: skip


def experiment_card_results(experiments_dir: str | Path, filters: str) -> CardResults:
    """The card rows of one bank from the experiments' ``results.json`` files under ``experiments_dir``.

    ``filters`` is the ``--filters`` spec the experiments trained with (``"imagenet-lite0"``, a bank folder, ...).
    Every experiment cell that used it becomes an ``EvalResult`` (accuracy, mean over seeds, rounded as the tables)
    and a row of the results table; every experiment that used it adds a section with its whole table (so the bank
    is seen beside every other arm), the scale and the command that reproduces it. The statistics are recomputed from
    the runs (:func:`masterkey.experiments.summarize`), so results written before they existed get them too.

    Example:
        >>> results, table, sections = experiment_card_results("outputs/experiments", "imagenet-lite0")
    """
    planned, unplanned, rows, sections = [], [], [], []
    for path in experiment_results_paths(experiments_dir):
        data = read_results(path)
        try:
            found = _card_rows(data, filters)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError) as e:
            raise ResultsFormatError(
                f"{path} is not the results.json of a masterkey experiment ({type(e).__name__}: {e}); run the "
                "experiment again, or point --experiments at the folder that `masterkey experiment` wrote."
            ) from None
        # an experiment under an analysis plan in force comes first: its primary arm is the card's headline
        (planned if (data.get("plan") or {}).get("plan") else unplanned).extend(found.results)
        rows += found.table.splitlines()
        sections += found.sections
    results = one_per_dataset(planned, plainest=False)  # a plan's cells in its order: the primary arm first
    covered = {(r.task_type, r.dataset_type, r.dataset_split) for r in results}
    results += [r for r in one_per_dataset(unplanned) if (r.task_type, r.dataset_type, r.dataset_split) not in covered]
    return CardResults(results, "\n".join([_RESULTS_HEADER, *rows]) if rows else "", sections)


def one_per_dataset(results: Sequence[EvalResult], *, plainest: bool = True) -> list[EvalResult]:
    """One result per task, dataset and split, the plainest (named by its dataset alone: the bank in the
    experiments' own model at their main budget) where there is one, else (or with ``plainest=False``) the first; in
    their order. A result is the
    bank's metric with the :data:`SCRATCH_METRIC` results right after it (from scratch beside it), kept or dropped
    together. The Hub's model-index groups results by task, dataset and split, not by name, so two results on one
    dataset would become one entry with two accuracies of different cells; the card's table keeps every row.

    Example:
        >>> one_per_dataset(experiment_card_results("docs/experiments", "imagenet-lite0").results)
    """
    cells: list[list[EvalResult]] = []
    for r in results:
        if r.metric_name == SCRATCH_METRIC and cells:
            cells[-1].append(r)
        else:
            cells.append([r])
    chosen: dict[tuple, int] = {}
    order = range(len(cells))
    for i in sorted(order, key=lambda i: cells[i][0].dataset_name != cells[i][0].dataset_type) if plainest else order:
        head = cells[i][0]  # stable: plain ones first, else the first
        chosen.setdefault((head.task_type, head.dataset_type, head.dataset_split), i)
    kept = set(chosen.values())
    return [r for i, cell in enumerate(cells) if i in kept for r in cell]


def _baselines_that_learned(runs: Sequence[dict[str, Any]], chance: Mapping[str, float]) -> dict[tuple, bool]:
    """Per (dataset, model, pair: the from-scratch cell an arm is compared with), whether every from-scratch run
    learned: the recorded learning check, or for runs written before it, a final train loss below
    :data:`~masterkey.experiments.LEARNED_LOSS_SHARE` of chance's ln K."""
    verdicts: dict[tuple, bool] = {}
    for r in (run for run in runs if run["filters"] == "none"):
        if "learned" in r:
            ok = bool(r["learned"])
        else:
            level = r.get("chance") or chance.get(r["dataset"])
            ok = bool(level) and r["train_loss"] < LEARNED_LOSS_SHARE * math.log(1 / level)
        key = (r["dataset"], r["model"], r.get("pair", ""))
        verdicts[key] = verdicts.get(key, True) and ok
    return verdicts


def _card_rows(data: dict[str, Any], filters: str) -> CardResults:
    """What one experiment's results give the card of ``filters``. A ``label_notes`` entry of the results (label ->
    text: what a label meant when its runs trained, where a rule was renamed since) marks the label's rows † and
    adds its text under the experiment's table."""
    if data["experiment"] in TUNING_EXPERIMENTS:  # scored on a validation split held out of train: no test result
        return CardResults([], "", [])
    chance = results_chance(data)
    summary = summarize(data["runs"], chance=chance)
    scratch = {(row["dataset"], row["model"], row["pair"]): row for row in summary if row["filters"] == "none"}
    learned = _baselines_that_learned(data["runs"], chance)
    # what a label meant when its runs trained, where that differs from what it means today (a renamed rule)
    notes: Mapping[str, str] = data.get("label_notes") or {}
    planned = bool((data.get("plan") or {}).get("plan"))  # else no plan preceded the grid: all of it is exploratory
    results, lines = [], []
    # the primary arms of a plan in force first (its confirmatory cells), then the rest in the table's order
    wanted = canonical_filters(filters)  # results recorded under a deprecated spelling of the spec count too
    rows = sorted((row for row in summary if canonical_filters(row["filters"]) == wanted),
                  key=lambda row: row.get("exploratory", True))  # fmt: skip
    sources: dict[tuple[str, str], set[int]] = {}  # the source networks each arm's runs froze the filters of
    for run in data["runs"]:
        if run.get("source_seed") is not None:
            sources.setdefault((run["group"], run["label"]), set()).add(run["source_seed"])
    for r in rows:
        key = (r["dataset"], r["model"], r["pair"])
        base_learned, base = learned.get(key, False), scratch.get(key)
        if base_learned and base is not None:  # no number goes into the metadata beside a baseline that did not learn
            name = _result_name(r, rows, data)
            results += [EvalResult(task_type="image-classification", dataset_type=r["dataset"], dataset_name=name,
                                   dataset_split="test", metric_type="accuracy", metric_value=round(value, 3),
                                   metric_name=metric)
                        for metric, value in ((BANK_METRIC, r["mean"]), (SCRATCH_METRIC, base["mean"]))]  # fmt: skip
        diff = r.get("vs_scratch")
        delta = format_difference(diff)
        baseline = "" if base is None else f"{base['mean']:.3f} ± {base['std']:.3f}"
        baseline += "" if base_learned else " ⚠ did not learn"
        level = f"{chance[r['dataset']]:.2f}" if r["dataset"] in chance else ""
        model = f"`{r['model']}`" + (f" ({r['pair']})" if r["pair"] else "")
        label = r["label"] + (" †" if r["label"] in notes else "")
        spanned = len(sources.get((r["group"], r["label"]), ()))
        label += f" (over {spanned} source networks, this bank one of them)" if spanned > 1 else ""
        label += " (exploratory)" if r.get("exploratory") or not planned else ""
        lines.append(f"| {data['experiment']} | {r['dataset']} | {model} | {label} | "
                     f"{r['mean']:.3f} ± {r['std']:.3f} | {baseline} | {delta} | {level} | {r['n']} |")  # fmt: skip
    sections = []
    if lines:
        scale = data["scale"]
        contrasts = contrast_table(paired_contrasts(data["runs"], (data.get("details") or {}).get("contrasts", ())))
        sections.append((
            f"Experiment: {data['experiment']}" + ("" if planned else " (exploratory)"),
            markdown_table(summary) + (f"\n\nPaired by seed:\n\n{contrasts}" if contrasts else "")
            + "".join(f"\n\n† {label}: {text}" for label, text in notes.items()
                      if any(r["label"] == label for r in rows))  # fmt: skip
            + ("" if planned else "\n\nNo analysis plan preceded this grid: its intervals are exploratory, "
               "uncorrected for the many it reports.")
            + f"\n\nScale `{scale['name']}`: {len(scale['seeds'])} seeds, "
            f"{scale['resolution']}px, {wall_time_text(data)}. {reproduce_text(data)}",
        ))  # fmt: skip
    return CardResults(results, "\n".join(lines), sections)


def _result_name(row: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], data: Mapping[str, Any]) -> str:
    """The name of a card's ``model-index`` entry: the dataset, and what else tells it from the bank's other results
    on that dataset: another architecture than the experiment's, the cell's pairing (a longer budget, a model
    variant), the arm's label where the same bank has several arms there (mapping rules)."""
    model = data.get("model") or (data.get("config") or {}).get("model")
    qualifiers = [row["model"]] if model and row["model"] != model else []
    qualifiers += [row["pair"]] if row["pair"] else []
    same = [r for r in rows if (r["dataset"], r["model"], r["pair"]) == (row["dataset"], row["model"], row["pair"])]
    qualifiers += [row["label"]] if len(same) > 1 else []
    return f"{row['dataset']} ({', '.join(qualifiers)})" if qualifiers else row["dataset"]


def _keys_table() -> str:
    corr = key_correlation()
    lines = [
        "| # | name | idealized model | sigma_x | sigma_y | correlation learned vs idealized (7x7) |",
        "|---|---|---|---|---|---|",
    ]
    for k in range(NUM_KEYS):
        sx, sy = IDEALIZED_SIGMAS[k]
        lines.append(f"| {k + 1} | `{KEY_NAMES[k]}` | {KEY_MODELS[k]} | {sx:.4f} | {sy:.4f} | {corr[k]:+.3f} |")
    return "\n".join(lines) + (
        f"\n\nThe idealized models are the paper's method B (arXiv:2509.12746): `T` is the discrete analogue of the "
        f"Gaussian, `exp(-s) I_n(s)` with `s = sigma^2`; key 7 is the unit impulse minus alpha = {KEY7_ALPHA:.4f} "
        "times the 5-point Laplacian of `T`. As in the paper's code, the differences are taken inside the window (the "
        "edge sample repeated) and key 7's Laplacian takes `T` as 0 outside it. Keys 2 and 3 follow the sign "
        "convention of Gaussian derivatives, opposite to the learned ones; an affine fit absorbs the sign."
    )


_LICENCE_TEXT = (
    "The learned key values (`model-fitting/8Filters.txt`) and the sigma and alpha values of the idealized models "
    "(`model-fitting/filteranal.py`) come from the repository "
    f"[tonylindeberg/masterfiltmodel]({REFERENCE_REPOSITORY}), {REFERENCE_LICENSOR}, licensed under "
    f"[CC BY 4.0]({REFERENCE_LICENSE_URL}) and provided as is, without warranty. The learned keys are those found by "
    f"{CITATION_UNIVERSAL}; the idealized models are those of {CITATION_SCALE_SPACE}.\n\n"
    "Changes made: the learned values are unchanged, stored as float32 in `filters.safetensors` (shape "
    "(8, 1, 7, 7)); the idealized keys are rendered by masterkey from the paper's formulas with those sigma and "
    "alpha values (no code of the repository is copied), at the card's kernel size, then centred to mean 0 and "
    "normalized to L2 norm 1. Credit both papers and the repository wherever these filters are used or shown."
)


def write_universal_cards(
    out_dir: str | Path,
    *,
    size: int = LEARNED_SIZE,
    experiments_dir: str | Path | None = None,
    lite0_explained: str | None = None,
) -> list[Path]:
    """Write the Hub folders ``universal-learned-8`` and ``universal-idealized-8`` (``filters.safetensors``,
    ``config.json``, ``README.md``) under ``out_dir``; returns their paths. The cards' tables are computed here;
    with ``experiments_dir`` the cards also carry the experiments' results for ``--filters universal-<kind>`` (and,
    on the idealized card, ``fitted:imagenet-lite0``, formerly ``universal-imagenet-lite0``, whose keys are rendered
    from the idealized definitions at 3x3 and 5x5). ``lite0_explained`` is :func:`masterkey.analysis.explained_table` of the ImageNet lite0 bank
    (computed here when not given).

    Example:
        >>> write_cards("hub_cards")  # masterkey cards --out hub_cards writes these and every other bank's folder
    """
    usage = (
        "```python\nimport masterkey\n\n"
        "# fit any bank: best key, a, b and R^2 for every filter\n"
        'fit = masterkey.fit_universal(masterkey.load_master_filters("imagenet-lite0"))\n'
        'print(fit.summary()["share_r2_at_least"])\n\n'
        "# a model whose depthwise kernels are frozen keys with a learnable per-channel shift\n"
        'model = masterkey.inject_universal("convnext_atto", learn_affine="shift", num_classes=10)\n'
        "model = masterkey.export_universal(model)  # fold back into a plain timm model\n```"
    )
    lite0 = (
        "Share of the depthwise filters of `tf_efficientnet_lite0` trained on ImageNet-1k "
        '(`masterkey.load_master_filters("imagenet-lite0")`) whose best affine fit `a * f_k + b` explains at least '
        "the given share R² of their variance; in parentheses the same for i.i.d. Gaussian filters of that size "
        "(chance level). Its kernels are 3x3 and 5x5, so the idealized keys are rendered at those sizes. Computed by "
        "`masterkey.analysis.explained_table` when this card was written.\n\n"
        + (lite0_explained or explained_table(load_master_filters("imagenet-lite0")))
    )
    written = []
    for kind in KEY_KINDS:
        folder = Path(out_dir) / f"universal-{kind}-8"
        what = (
            "the 7x7 values learned by ConvNeXt-V2 Tiny on ImageNet-1k"
            if kind == "learned"
            else f"the idealized discrete scale-space models rendered at {size}x{size} (any odd size is available "
            f"with `masterkey.universal_bank('idealized', size=...)`)"
        )
        card = {
            "title": f"The 8 universal master key filters ({kind})",
            "summary": "The 8 universal depthwise filters of which nearly every trained depthwise filter is an affine "
            f"image `a * f_k + b` (arXiv:2509.11711): {what}. The bank holds one entry, `universal_keys`, shaped "
            "(8, 1, k, k), each filter with mean 0 and L2 norm 1. Use them with `masterkey.fit_universal` and "
            "`masterkey.inject_universal` rather than as a per-layer bank.",
            "example_model": "convnext_atto",
            "usage": usage,  # fit and inject the keys: they are not a per-layer bank
            "sections": [
                ("The 8 keys", _keys_table()),
                ("What they explain in an ImageNet bank", lite0),
                ("Licence", _LICENCE_TEXT),
            ],
            "credits": [
                (
                    f"Learned values and the idealized models' sigma and alpha: {REFERENCE_REPOSITORY} "
                    f"(model-fitting/8Filters.txt, model-fitting/filteranal.py), {REFERENCE_LICENSOR}, CC BY 4.0 "
                    f"({REFERENCE_LICENSE_URL}); changes made: see Licence."
                )
            ],
        }
        results = []
        if experiments_dir is not None:
            specs = [f"universal-{kind}"] + ([f"{FITTED_PREFIX}imagenet-lite0"] if kind == "idealized" else [])
            tables = []
            for spec in specs:
                found = experiment_card_results(experiments_dir, spec)
                results += found.results
                tables += found.table.splitlines()[len(_RESULTS_HEADER.splitlines()):]
                titles = {title for title, _ in card["sections"]}  # one experiment, one section, whatever the spec
                card["sections"] += [(title, body) for title, body in found.sections if title not in titles]
            card["results_text"] = "\n".join([_RESULTS_HEADER, *tables]) if tables else ""
            results = one_per_dataset(results)  # the card's own arm first: the naive key assignment, then fitted
        publish_bank(universal_bank(kind, size=size), folder=folder, results=results, card_kwargs=card, dry_run=True)
        written.append(folder)
    return written
