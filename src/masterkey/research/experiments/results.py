"""Reading an experiment's ``results.json`` back: one reader for every tool that starts from one (the verdicts, the
results pages, the cards, the plots, ``--retrain``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import ResultsFormatError

# what `masterkey experiment` writes into every results.json, whatever the experiment: a file without one of these
# is something else (a single run's results.json, another tool's JSON) or was cut short
RESULTS_KEYS = ("experiment", "model", "scale", "runs", "summary", "table")


def read_results(path: str | Path, *, experiment: str | None = None) -> dict[str, Any]:
    """The content of the ``results.json`` at ``path`` that ``masterkey experiment`` wrote, checked to be one (and of
    ``experiment`` where given) before any caller reads a field of it.

    Raises:
        ResultsFormatError: the file cannot be read, is not JSON, lacks one of :data:`RESULTS_KEYS` (it names the
            first), or is another experiment's.

    Example:
        >>> read_results("docs/experiments/transfer-matrix/results.json")["experiment"]
        'transfer-matrix'
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ResultsFormatError(f"The results {str(path)!r} cannot be read ({e}); give the results.json that "
                                 "`masterkey experiment` wrote, or run the experiment.") from None  # fmt: skip
    missing = [key for key in RESULTS_KEYS if key not in data] if isinstance(data, dict) else []
    if not isinstance(data, dict):
        problem = "not a JSON object"
    elif missing:
        problem = f"no {missing[0]!r}"
    elif not isinstance(data["runs"], list):
        problem = "'runs' not a list"
    else:
        problem = None
    if problem:
        raise ResultsFormatError(f"{str(path)!r} is not a results.json that `masterkey experiment` wrote ({problem}); "
                                 "give the one in the experiment's folder (beside its config.json).")  # fmt: skip
    if experiment is not None and data["experiment"] != experiment:
        raise ResultsFormatError(f"{str(path)!r} is not a results.json of the experiment {experiment!r} (it is "
                                 f"{data['experiment']!r}'s): give the one `masterkey experiment {experiment}` "
                                 "wrote.")  # fmt: skip
    return data
