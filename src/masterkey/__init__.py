"""masterkey: master key depthwise filters for depthwise-separable CNNs.

Extract the depthwise filters of any timm model into a :class:`FilterBank`, publish it on the Hugging Face Hub,
load it back with :func:`load_master_filters` and inject it, frozen, into another model with
:func:`from_pretrained_filters`.

Public names are imported lazily (as in ``huggingface_hub``), so ``import masterkey`` stays cheap and never
imports an optional extra.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .constants import LIBRARY_VERSION as __version__

# public name -> submodule that defines it
_LAZY_ATTRS = {
    "FilterBank": "bank",
    "KernelSpec": "bank",
    "load_master_filters": "hub",
    "DepthwiseConv": "extract",
    "find_depthwise_convs": "extract",
    "extract_filters": "extract",
    "from_pretrained_filters": "inject",
    "freeze_depthwise": "inject",
    "trainable_parameters": "inject",
    "InjectionReport": "inject",
    "TrainableParameters": "inject",
    "match_by_depth": "mapping",
    "fit_kernel": "mapping",
    "resize_kernel": "mapping",
    "select_channels": "mapping",
    "fit_universal": "fitting",
    "UniversalFit": "fitting",
    "universal_bank": "keys",
    "inject_universal": "universal_injection",
    "export_universal": "universal_injection",
    "inject_pointwise": "research.controls",  # deprecated here: an experiment control, not library API
    "save_model": "models",
    "push_model": "models",
    "analyze_bank": "analysis",
    "train_transfer": "training",
    "load_image_dataset": "training",
    "BUILTIN_DATASETS": "training",
    "parse_bank": "names",
    "parse_filters": "names",
    "parse_dataset": "names",
    "list_names": "catalog",
    "errors": None,
}

#: Names still reachable here that moved out of the library's API (a warning says where they live now).
_DEPRECATED = {"inject_pointwise": "masterkey.research.controls.inject_pointwise (an experiment control)"}

# written out (not computed) so that linters and IDEs read it; a test keeps it equal to _LAZY_ATTRS less _DEPRECATED
__all__ = [
    "BUILTIN_DATASETS",
    "DepthwiseConv",
    "FilterBank",
    "InjectionReport",
    "KernelSpec",
    "TrainableParameters",
    "UniversalFit",
    "analyze_bank",
    "errors",
    "export_universal",
    "extract_filters",
    "find_depthwise_convs",
    "fit_kernel",
    "fit_universal",
    "freeze_depthwise",
    "from_pretrained_filters",
    "inject_universal",
    "list_names",
    "load_image_dataset",
    "load_master_filters",
    "match_by_depth",
    "parse_bank",
    "parse_dataset",
    "parse_filters",
    "push_model",
    "resize_kernel",
    "save_model",
    "select_channels",
    "train_transfer",
    "trainable_parameters",
    "universal_bank",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY_ATTRS:
        raise AttributeError(f"module 'masterkey' has no attribute {name!r}")
    submodule = _LAZY_ATTRS[name]
    if name in _DEPRECATED:
        warnings.warn(f"masterkey.{name} is deprecated; use {_DEPRECATED[name]}.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"masterkey.{submodule}"), name)
    if submodule is None:
        return importlib.import_module(f"masterkey.{name}")
    value = getattr(importlib.import_module(f"masterkey.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import errors
    from .analysis import analyze_bank
    from .bank import FilterBank, KernelSpec
    from .extract import DepthwiseConv, extract_filters, find_depthwise_convs
    from .hub import load_master_filters
    from .mapping import fit_kernel, match_by_depth, resize_kernel, select_channels
    from .inject import (
        InjectionReport,
        TrainableParameters,
        freeze_depthwise,
        from_pretrained_filters,
        trainable_parameters,
    )
    from .training import BUILTIN_DATASETS, load_image_dataset, train_transfer
    from .fitting import UniversalFit, fit_universal
    from .universal_injection import export_universal, inject_universal
    from .keys import universal_bank
    from .models import push_model, save_model
    from .names import parse_bank, parse_dataset, parse_filters
    from .catalog import list_names
