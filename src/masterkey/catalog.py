"""Every name masterkey knows, listed: ``masterkey list banks|filters|datasets|zoo`` and :func:`list_names`.

The registries stay where they are defined (:data:`masterkey.hub.BUILTIN_BANKS`,
:data:`masterkey.training.NAMED_FILTERS`, :data:`masterkey.training.BUILTIN_DATASETS`,
:data:`masterkey.publishing.ZOO`); this module reads them, with a short description of each name, without building a
bank, loading a dataset or downloading anything. How the names are parsed is :mod:`masterkey.names`.
"""

from __future__ import annotations

import fnmatch

from timm.models import get_pretrained_cfg

from . import _timm
from .errors import ArgumentError
from .hub import BUILTIN_BANKS
from .keys import KEY_KINDS
from .names import FILTER_KEYWORDS, FITTED_PREFIX, LEGACY_FITTED_PREFIX, close_matches
from .publishing import ZOO, zoo_repo_name
from .sources import IMAGENET_SOURCES
from .training import BUILTIN_DATASETS, NAMED_FILTERS

__all__ = ["NAME_KINDS", "NAME_FORMS", "list_names"]

#: What :func:`list_names` lists.
NAME_KINDS = ("banks", "filters", "datasets", "zoo")
#: The forms of each kind that are not names in a list, ``(form, meaning)``: what ``masterkey list`` prints below
#: its table.
NAME_FORMS: dict[str, tuple[tuple[str, str], ...]] = {
    "banks": (
        ("org/name", "a bank on the Hugging Face Hub (cached; offline once downloaded)"),
        ("FOLDER", "a bank folder written by save_pretrained (an existing folder wins over a built-in name)"),
    ),
    "filters": (
        ("org/name, FOLDER", "any bank, as for `masterkey list banks`"),
        (f"{FITTED_PREFIX}BANK", "the 8 learned keys fitted to any bank (each channel's key, scale and shift), frozen"),
        (f"{LEGACY_FITTED_PREFIX}BANK", f"deprecated spelling of {FITTED_PREFIX}BANK (built-in bank names win)"),
    ),
    "datasets": (
        ("org/name", "a Hub dataset (with --dataset_config_name where it has configs)"),
        ("FOLDER", "a folder written by save_to_disk, or an imagefolder (one sub-folder per class)"),
    ),
    "zoo": (("ORG", "`masterkey publish --zoo ORG` publishes each bank as ORG/<bank repo>"),),
}


def _bank_description(name: str) -> str:
    for source in IMAGENET_SOURCES.values():
        if source.bank_name == name:
            return (f"{source.depthwise_convs} depthwise kernels ({source.kernel_sizes}) of {source.library}'s "
                    f"{source.model} trained on ImageNet-1k ({source.license}), from PyPI's "
                    f"{source.package}")  # fmt: skip
    for kind in KEY_KINDS:
        if name == f"universal-{kind}-8":
            return f"the 8 {kind} universal keys as one 7x7 entry, shaped (8, 1, 7, 7)"
    doc = (BUILTIN_BANKS[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _filters() -> dict[str, str]:
    names = dict(FILTER_KEYWORDS)
    for name, resolver in NAMED_FILTERS.items():  # anything registered besides the keywords
        if name not in names:
            doc = (resolver.__doc__ or "").strip()
            names[name] = doc.splitlines()[0] if doc else "registered in NAMED_FILTERS"
    for bank in BUILTIN_BANKS:
        names.setdefault(bank, f"the built-in bank {bank}, frozen (`masterkey list banks`)")
    for bank in BUILTIN_BANKS:
        names.setdefault(FITTED_PREFIX + bank, f"the 8 learned keys fitted to the built-in bank {bank}, frozen")
    return names


def _zoo() -> dict[str, str]:
    names = {}
    for checkpoint in ZOO:
        cfg = get_pretrained_cfg(checkpoint)  # timm's registry: nothing is downloaded
        dataset = _timm.dataset_of_tag(_timm.split_model_name_tag(checkpoint)[1]) or "?"
        licence = (cfg.license if cfg is not None else None) or "?"
        names[checkpoint] = f"-> ORG/{zoo_repo_name(checkpoint)} ({dataset}, {licence})"
    return names


def list_names(kind: str, *, pattern: str | None = None) -> dict[str, str]:
    """The names of ``kind`` (``"banks"``, ``"filters"``, ``"datasets"`` or ``"zoo"``), each with a short description,
    in registry order; ``pattern`` keeps the names matching it (``fnmatch``: ``"imagenet-*"``). Nothing is built or
    downloaded. The forms that are not names (Hub ids, folders, ``fitted:<bank>``) are in :data:`NAME_FORMS`;
    deprecated spellings are never listed.

    Raises:
        ArgumentError: an unknown ``kind``.

    Example:
        >>> import masterkey
        >>> list(masterkey.list_names("banks"))[:2]
        ['imagenet-lite0', 'imagenet-lite1']
        >>> masterkey.list_names("filters", pattern="universal-*")["universal-learned-8"]
        'the built-in bank universal-learned-8, frozen (`masterkey list banks`)'
    """
    if kind not in NAME_KINDS:
        close = close_matches(kind, NAME_KINDS)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ArgumentError(f"Nothing called {kind!r} to list.{hint} Choose one of {', '.join(NAME_KINDS)}.")
    if kind == "banks":
        names = {name: _bank_description(name) for name in BUILTIN_BANKS}
    elif kind == "filters":
        names = _filters()
    elif kind == "datasets":
        names = {name: dataset.description for name, dataset in BUILTIN_DATASETS.items()}
    else:
        names = _zoo()
    if pattern:
        names = {name: text for name, text in names.items() if fnmatch.fnmatchcase(name, pattern)}
    return names
