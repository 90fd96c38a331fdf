"""Transfer training with Accelerate: inject a master-key filter bank into a timm DS-CNN, freeze it, fine-tune the
rest on any ``datasets`` image-classification dataset, and report the result.

``examples/transfer.py`` is :func:`main`; everything it does is here, where tests reach it:

- :mod:`.data`: built-in offline datasets (:data:`BUILTIN_DATASETS`), :func:`load_image_dataset`, column
  detection, label mapping, timm transforms;
- :mod:`.filters`: what ``--filters`` names (:func:`resolve_filters`, :data:`NAMED_FILTERS`);
- :mod:`.args`: the command line (:func:`parse_args`) and the embedded default (:data:`DEMO_ARGS`);
- :mod:`.loop`: :func:`train_transfer` and the training loop;
- :mod:`.outputs`: results.json, the model folder (timm and transformers), the model card, checkpoints.

Requires the ``train`` extra: ``pip install 'masterkey[train]'``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .args import DEMO_ARGS, build_parser, make_config, parse_args
from .data import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    load_builtin_dataset,
    load_image_dataset,
    prepare_splits,
    register_dataset,
)
from .filters import NAMED_FILTERS, ResolvedFilters, resolve_filters
from .loop import ACCURACY_METRIC_PATH, evaluate_model, fit, load_accuracy_metric, train_transfer

__all__ = [
    "main",
    "train_transfer",
    "parse_args",
    "build_parser",
    "make_config",
    "DEMO_ARGS",
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "register_dataset",
    "load_builtin_dataset",
    "load_image_dataset",
    "prepare_splits",
    "NAMED_FILTERS",
    "ResolvedFilters",
    "resolve_filters",
    "ACCURACY_METRIC_PATH",
    "load_accuracy_metric",
    "fit",
    "evaluate_model",
]


def main(argv: Sequence[str] | None = None) -> int:
    """``examples/transfer.py``: parse the command line (none at all: the offline demo, :data:`DEMO_ARGS`), train,
    and exit 0; errors masterkey diagnosed print as one line and exit 2."""
    from ..errors import MasterKeyError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(f"No arguments: running the offline demo, transfer.py {' '.join(DEMO_ARGS)}", flush=True)
    try:
        train_transfer(parse_args(argv))
    except MasterKeyError as e:
        print(f"transfer.py: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 2
    return 0
