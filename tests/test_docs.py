"""The documentation: the site builds offline in strict mode (a broken link, anchor or docstring fails), every Python
snippet of the README and of the pages under docs/ runs, and the text for users stays free of working notes."""

from __future__ import annotations

import fnmatch
import os
import re
import runpy
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import masterkey

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: docs/ folders that hold data, not pages (mkdocs.yml's exclude_docs): the bank folders kept beside the results
EXCLUDED = ("experiments/*/banks/*", "_ext/*")
#: a bank repo the snippets load from the Hub: the tests' loopback Hub serves it (the ImageNet lite0 bank)
HUB_BANK = "your-org/tf_efficientnet_lite0-imagenet-dw"
SNIPPET_TIMEOUT_S = 180
README_MAX_BYTES = 15_500  # "about 15 KB": everything else lives on the documentation site
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def _pages() -> list[Path]:
    pages = [p for p in DOCS.rglob("*.md")
             if not any(fnmatch.fnmatch(p.relative_to(DOCS).as_posix(), pattern) for pattern in EXCLUDED)]
    return [ROOT / "README.md", *sorted(pages)]


def _snippets() -> list:
    found = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            code = textwrap.dedent(match["body"])
            found.append(pytest.param(code, id=f"{page.relative_to(ROOT).as_posix()}:{line}"))
    return found


SNIPPETS = _snippets()


def test_every_page_has_its_place():
    """The snippets were found (the pattern reads the pages as they are written) and the README stays short."""
    assert len(SNIPPETS) >= 20
    assert (ROOT / "README.md").stat().st_size <= README_MAX_BYTES


def test_site_builds_strict_and_offline(tmp_path):
    """`mkdocs build --strict`: every link and anchor between pages resolves, and mkdocstrings reads every
    docstring of the API pages; no step reaches the internet (no plugin that downloads, the theme's web fonts off)."""
    site = tmp_path / "site"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    assert "WARNING" not in result.stderr, result.stderr[-6000:]
    for page in ("index.html", "guides/banks/index.html", "results/transfer-matrix/index.html", "speed/index.html",
                 "reliability/index.html", "experiments/cross-family/plan/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "hub" / "index.html").read_text(encoding="utf-8")
    assert "load_master_filters" in api and ":func:" not in api  # the docstrings, rendered
    assert (site / "experiments" / "transfer-matrix" / "transfer-matrix.png").is_file()  # figures come along
    assert not (site / "experiments" / "transfer-matrix" / "banks").exists()  # data, not pages


def _slug(heading: str) -> str:
    """A heading's anchor, as GitHub and mkdocs' toc both make it for the headings of these pages."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def test_readme_links_resolve():
    """The README's links into the repository (relative, so they work on GitHub) reach a file, and an anchor a
    heading of that file; mkdocs checks the links of the pages, not the README's."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 30
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            assert anchor in {_slug(h) for h in headings}, link


def test_the_package_page_lists_every_public_name():
    """docs/api/masterkey.md lists the names `import masterkey` gives (they are lazy, so mkdocstrings cannot see them)."""
    rows = re.findall(r"^\| (`.+?`) \| .+ \|$", (DOCS / "api" / "masterkey.md").read_text(encoding="utf-8"), re.M)
    listed = {name for row in rows for name in re.findall(r"`(\w+)`", row)}
    assert listed == set(masterkey.__all__) - {"__version__", "errors"}


def test_demo_summary_links_verdict_1():
    """`make demo`'s last line says that its gap is the short budget's and links verdict 1, which exists; other runs
    and the experiments' regime get no such line."""
    from masterkey.training import parse_args

    example = runpy.run_path(str(ROOT / "examples" / "transfer.py"))
    note = example["budget_note"](parse_args([]))
    assert note.startswith("This gap is the short budget's (32 px, 4 epochs)") and example["VERDICT_1"] in note
    page, anchor = example["VERDICT_1"].split("#")
    headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(encoding="utf-8"), re.M)
    assert anchor in {_slug(h) for h in headings}
    demo = ["--model", "tf_efficientnet_lite0", "--filters", "imagenet-lite0", "--dataset_name", "animal-mnist"]
    assert example["budget_note"](parse_args([*demo, "--resolution", "64", "--num_train_epochs", "6",
                                              "--compare_with_scratch"])) is None  # fmt: skip
    assert example["budget_note"](parse_args([*demo, "--resolution", "32"])) is None  # no comparison
    assert example["budget_note"](parse_args(["--dataset_name", "digits", "--compare_with_scratch"])) is None


_WORKING_NOTES = {
    "a working date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a time of day": re.compile(r"\b\d\d:\d\d to \d\d:\d\d\b"),
    "a session": re.compile(r"\bsession ?\d+\b|-session\d", re.I),
    "a log file name": re.compile(r"[\w.-]+\.log\b"),
}


@pytest.mark.parametrize("page", [p for p in _pages() if "experiments" not in p.relative_to(ROOT).parts[:2]],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_working_notes_in_text_for_users(page):
    """Wall times and commands are measurements; the dates they were taken, sessions and log names are not (the logs
    stay under docs/benchmarks/). The committed analysis plans under docs/experiments are left as committed."""
    text = page.read_text(encoding="utf-8")
    for what, pattern in _WORKING_NOTES.items():
        assert not pattern.search(text), f"{what} in {page.name}: {pattern.search(text)[0]!r}"


@pytest.fixture(scope="module")
def hub_bank(local_hub, tmp_path_factory):
    """The bank the snippets name as a Hub repo, served by the loopback Hub."""
    folder = tmp_path_factory.mktemp("hub-bank")
    masterkey.load_master_filters("imagenet-lite0").save_pretrained(folder)
    local_hub.publish(HUB_BANK, folder)
    return HUB_BANK


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"the snippet ran past {SNIPPET_TIMEOUT_S} s")


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, hub_bank, tmp_path, monkeypatch):
    """Each snippet runs as written, alone (its own namespace, a fresh working folder), within a time limit; output
    it shows is in comments."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SNIPPET_TIMEOUT_S)
    try:
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        torch.set_num_threads(threads)


def test_the_verdicts_quote_the_correction_across_every_published_interval():
    """The README and the verdicts page say how many of the exploratory grids' paired intervals survive Holm and
    Benjamini-Hochberg across all of them: the counts benchmarks/published_intervals.py computes from the published
    results, so a changed result that changes them fails here until the text says so."""
    from published_intervals import published_intervals  # benchmarks/: conftest puts it on the path

    rows = published_intervals(DOCS / "experiments")
    n, raw = len(rows), sum(r["real"] for r in rows)
    holm, bh = sum(r["p_holm"] < 0.05 for r in rows), sum(r["q_bh"] < 0.05 for r in rows)
    assert 0 < holm <= bh <= raw < n
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"{holm} of the {n} paired intervals those grids publish exclude 0" in readme
    assert f"{raw} do uncorrected" in readme
    page = " ".join((DOCS / "results" / "index.md").read_text(encoding="utf-8").split())
    assert f"Of the {n} paired intervals the exploratory grids publish, {raw} exclude 0 uncorrected" in page
    assert f"with Holm's correction across all {n} at 0.05, {holm} remain" in page
    assert holm == bh, "the verdicts page says Benjamini-Hochberg keeps as many: say how many it keeps"


def test_the_how_much_faster_tables_quote_time_to_reach_of_the_published_runs():
    """The shares on the results pages are what masterkey.research.experiments.time_to_reach computes from the
    published runs (benchmarks/time_to_reach.py prints the whole table)."""
    import json

    from masterkey.research.experiments import time_to_reach

    def share(row):
        s = row["share_of_scratch"]
        return f"{s['mean']:.2f} [{s['low']:.2f}, {s['high']:.2f}]" if row["reached"] > 1 else f"{s['mean']:.2f}"

    for experiment, page in (("transfer-matrix", "transfer-matrix.md"), ("across-architectures",
                                                                         "across-architectures.md")):  # fmt: skip
        runs = json.loads((DOCS / "experiments" / experiment / "results.json").read_text(encoding="utf-8"))["runs"]
        text = (DOCS / "results" / page).read_text(encoding="utf-8")
        rows = [line for line in text.splitlines() if line.startswith("| ") and "/" in line.split("|")[3]]
        assert rows, f"{page} has no how-much-faster table"
        by_cell = {(r["group"], r["label"]): r for r in time_to_reach(runs)}
        for line in rows:
            group, label, reached = (cell.strip() for cell in line.split("|")[1:4])
            if (group, label) not in by_cell:  # a line that sums several arms up
                continue
            row = by_cell[group, label]
            assert reached.startswith(f"{row['reached']}/{row['n']}"), line
            if row["reached"]:
                assert share(row) in line, line
    verdicts = " ".join((DOCS / "results" / "index.md").read_text(encoding="utf-8").split())
    matrix = json.loads((DOCS / "experiments" / "transfer-matrix" / "results.json").read_text(encoding="utf-8"))
    by_cell = {(r["group"], r["label"]): r for r in time_to_reach(matrix["runs"])}
    for group in ("animal-mnist", "animal-mnist, 12 epochs"):
        assert share(by_cell[group, "imagenet-lite0 (frozen)"]) in verdicts


def test_every_generated_results_block_on_the_pages_equals_its_results_json():
    """The pages' `<!-- results: PATH -->` blocks are written by `masterkey pages docs` from their results.json: a
    number edited by hand, or results run again without writing the pages, fails here."""
    from masterkey.research.pages import BLOCK, stale_blocks

    marked = [p for p in sorted((ROOT / "docs" / "results").rglob("*.md")) if BLOCK.search(p.read_text(encoding="utf-8"))]
    assert len(marked) >= 2, "the results pages lost their generated blocks"
    assert stale_blocks(ROOT / "docs", root=ROOT) == [], "run `masterkey pages docs` and commit the pages"


def _public_functions() -> list[tuple[str, str, str]]:
    """(module, function, docstring) of every module-level public function of the package's public modules."""
    import ast

    found = []
    for path in sorted((ROOT / "src" / "masterkey").rglob("*.py")):
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts):
            continue  # private modules (_timm, _libraries, ...) hold helpers, not API
        module = ".".join(p for p in parts if p != "__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                found.append((module, node.name, ast.get_docstring(node) or ""))
    return found


def test_every_public_function_has_a_docstring_with_an_example():
    functions = _public_functions()
    assert len(functions) > 150
    missing = [f"{module}.{name}" for module, name, doc in functions if "Example" not in doc]
    assert not missing, f"public functions without an Example in their docstring: {missing}"


#: docstring examples (functions, and methods as ``Class.method``) that need no training run, network or output
#: folder: they run as written, outputs compared
RUNNABLE_EXAMPLES = {
    "masterkey.bank": ["FilterBank.generate_model_card"],
    "masterkey.cards": ["results_table"],
    "masterkey.extract": ["is_depthwise", "prepare_model"],
    "masterkey.fitting": ["UniversalFit.share_above", "UniversalFit.key_usage", "UniversalFit.layer_summaries",
                          "UniversalFit.summary"],
    "masterkey.inject": ["check_trainable", "InjectionReport.injected", "InjectionReport.table"],
    "masterkey.keys": ["keys_for"],
    "masterkey.mapping": ["match_exact", "kernel_orientation", "match_by_size_then_stage", "resolve_mapping",
                          "unmapped_reason", "check_resize", "select_channels"],
    "masterkey.models": ["how_to_use"],
    "masterkey.research.controls": ["pointwise_convs"],
    "masterkey.research.experiments.config": ["variant_of", "Scale.epochs", "ExperimentConfig.from_json",
                                              "ExperimentConfig.learning_rate"],
    "masterkey.research.experiments.layer_split": ["split_classes"],
    "masterkey.research.experiments.results": ["read_results"],
    "masterkey.research.experiments.statistics": ["summarize"],
    "masterkey.research.experiments.tables": ["format_difference", "contrast_table", "markdown_table",
                                              "time_to_reach_table", "reproduce_text"],
    "masterkey.research.experiments.transfer_matrix": ["main_arms"],
    "masterkey.research.plans": ["planned_experiment", "AnalysisPlan.from_dict", "AnalysisPlan.primary_pairs",
                                 "AnalysisPlan.planned_cells"],
    "masterkey.research.verdicts": ["outcome"],
    "masterkey.sources": ["imagenet_lite0_weights"],
    "masterkey.training.data": ["detect_columns", "timm_transforms"],
    "masterkey.training.outputs": ["library_versions"],
    "masterkey.training.results": ["RunResults.from_json"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(RUNNABLE_EXAMPLES))
def test_docstring_examples_run_as_written(module, monkeypatch):
    import doctest
    import functools
    import importlib

    monkeypatch.chdir(ROOT)  # the examples name committed files by their path in the repository
    torch.set_num_threads(1)
    imported = importlib.import_module(module)
    failed = []
    for name in RUNNABLE_EXAMPLES[module]:
        documented = functools.reduce(getattr, name.split("."), imported)
        test = doctest.DocTestParser().get_doctest(documented.__doc__, dict(vars(imported)),
                                                   f"{module}.{name}", module, 0)  # fmt: skip
        assert test.examples, f"{module}.{name} has no example"
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL).run(
            test, out=lambda text: failed.append(text))
        assert result.attempted
    assert not failed, "".join(failed)
