"""The one grammar of the names a user types: a bank, a filters spec (``--filters``), a dataset (``--dataset_name``).

Each parser turns a name into a typed result and nothing else: it neither builds nor downloads anything (it only
asks whether a local path exists). The forms, tried in this order (the first that applies wins):

**A bank** (:func:`parse_bank`: :func:`masterkey.load_master_filters`, :func:`masterkey.from_pretrained_filters`,
``masterkey inspect``, the ``<bank>`` of ``fitted:<bank>``):

1. an existing local path: a folder written by ``save_pretrained`` (``./name`` reaches a folder named like anything
   below);
2. a built-in name (:data:`masterkey.hub.BUILTIN_BANKS`: ``imagenet-lite0``, ``universal-learned-8``, ...);
3. a Hub repo id ``org/name``;
4. anything else path-like (with a ``/``, or starting with ``.`` or ``~``): a folder, reported as missing;
5. any other word is refused (:class:`~masterkey.errors.UnknownNameError`, with the closest built-in names): a
   bank on the Hub always has an ``org/``.

**A filters spec** (:func:`parse_filters`: ``--filters``, ``train_transfer(filters=...)``,
:func:`masterkey.training.resolve_filters`):

1. ``none`` (also ``scratch`` or empty): no filters, every weight trains;
2. a keyword of :data:`FILTER_KEYWORDS`: ``own``, ``random``, ``universal-learned``, ``universal-idealized``;
3. a name registered for the run (``NAMED_FILTERS``, ``extra_filters``: the ``named`` argument);
4. ``fitted:<bank>`` (:data:`FITTED_PREFIX`): the 8 learned keys fitted to the bank ``<bank>`` (any bank form);
5. a bank, in the bank order above, except that a word starting with ``universal-`` that is neither a built-in
   bank nor an existing path is the deprecated spelling of ``fitted:<rest>`` (:data:`LEGACY_FITTED_PREFIX`; it
   warns with a ``FutureWarning``).

So an exact built-in bank name always beats prefix parsing: ``universal-learned-8`` is the built-in bank, while
``universal-imagenet-lite0`` still means ``fitted:imagenet-lite0``. No prefix can collide with a bank: built-in
names hold no ``:``, Hub ids cannot, and a folder named ``fitted:x`` is reached as ``./fitted:x``.

**A dataset** (:func:`parse_dataset`: ``--dataset_name``, :func:`masterkey.training.load_image_dataset`): a built-in
name (unless a local path has that name), an existing local path (a ``save_to_disk`` folder or an imagefolder), a
path-like name (missing), else a Hub dataset id (``org/name``, or a canonical id such as ``cifar10``).

What exists under each kind is listed by ``masterkey list banks|filters|datasets|zoo`` and
:func:`masterkey.list_names`, without building or downloading anything.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .errors import UnknownNameError
from .hub import BUILTIN_BANKS

__all__ = [
    "canonical_filters",
    "FITTED_PREFIX",
    "LEGACY_FITTED_PREFIX",
    "SCRATCH_NAMES",
    "FILTER_KEYWORDS",
    "BankRef",
    "FiltersSpec",
    "DatasetRef",
    "parse_bank",
    "parse_filters",
    "parse_dataset",
    "close_matches",
]

#: ``fitted:<bank>``: the 8 learned universal keys fitted to ``<bank>`` (each channel's key, scale and shift).
FITTED_PREFIX = "fitted:"
#: The deprecated spelling ``universal-<bank>`` of ``fitted:<bank>``: it collides with the built-in banks
#: ``universal-learned-8`` and ``universal-idealized-8``, which win. It still resolves (with a ``FutureWarning``) so
#: that recorded runs and configurations keep working.
LEGACY_FITTED_PREFIX = "universal-"
#: The filters specs that mean "no filters: train from scratch" (compared lower-cased, stripped).
SCRATCH_NAMES = ("none", "scratch", "")
#: The fixed words of the filters grammar, with what each injects.
FILTER_KEYWORDS: dict[str, str] = {
    "none": "no filters injected: every weight trains from scratch (also: scratch)",
    "own": "the model's own depthwise kernels, frozen (with pretrained weights: efficient fine-tuning)",
    "random": "the model's own random initial depthwise kernels, frozen: the control for any bank",
    "universal-learned": "the 8 learned universal keys, key = channel mod 8, frozen",
    "universal-idealized": "the 8 idealized universal keys rendered at each kernel size, key = channel mod 8, frozen",
}
_KEYS_OF = {"universal-learned": "learned", "universal-idealized": "idealized"}

BankKind = Literal["builtin", "folder", "hub"]
FiltersKind = Literal["none", "own", "random", "keys", "named", "fitted", "bank"]
DatasetKind = Literal["builtin", "folder", "hub"]


@dataclass(frozen=True)
class BankRef:
    """A bank name, parsed: ``kind`` is ``"builtin"`` (one of :data:`masterkey.hub.BUILTIN_BANKS`), ``"folder"`` (a
    local path, existing or not) or ``"hub"`` (a Hub repo id ``org/name``); ``name`` is the name as given.

    Example:
        >>> parse_bank("imagenet-lite0")
        BankRef(kind='builtin', name='imagenet-lite0')
    """

    kind: BankKind
    name: str


@dataclass(frozen=True)
class FiltersSpec:
    """A filters spec, parsed.

    Attributes:
        text: the spec as given.
        kind: ``"none"``, ``"own"``, ``"random"``, ``"keys"`` (the universal keys by channel), ``"named"`` (a name
            registered for the run), ``"fitted"`` (the keys fitted to ``bank``) or ``"bank"`` (``bank`` itself).
        bank: the bank of ``"fitted"`` and ``"bank"``, else ``None``.
        keys: ``"learned"`` or ``"idealized"`` for ``"keys"`` and ``"fitted"`` (always learned), else ``None``.
        deprecated: written in a deprecated spelling (``universal-<bank>``); :attr:`canonical` is the current one.

    Example:
        >>> parse_filters("fitted:imagenet-lite0").bank
        BankRef(kind='builtin', name='imagenet-lite0')
    """

    text: str
    kind: FiltersKind
    bank: BankRef | None = None
    keys: str | None = None
    deprecated: bool = False

    @property
    def canonical(self) -> str:
        """The spec in the current spelling (``fitted:<bank>`` for ``universal-<bank>``, ``none`` for ``scratch``).

        Example:
            >>> parse_filters("scratch").canonical
            'none'
        """
        if self.kind == "none":
            return "none"
        if self.kind == "fitted" and self.bank is not None:
            return FITTED_PREFIX + self.bank.name
        return self.text


@dataclass(frozen=True)
class DatasetRef:
    """A dataset name, parsed: ``kind`` is ``"builtin"``, ``"folder"`` (a local path: a ``save_to_disk`` folder or an
    imagefolder) or ``"hub"`` (a Hub dataset id); ``name`` is the name as given.

    Example:
        >>> parse_dataset("digits", builtin=["digits", "animal-mnist"])
        DatasetRef(kind='builtin', name='digits')
    """

    kind: DatasetKind
    name: str


def close_matches(name: str, choices: Iterable[str], *, n: int = 3) -> list[str]:
    """The names among ``choices`` closest to ``name``, best first (``difflib``, ratio at least 0.6).

    Example:
        >>> close_matches("imagenet-lite", ["imagenet-lite0", "imagenet-lite1", "digits"])
        ['imagenet-lite0', 'imagenet-lite1']
    """
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)


def _exists(text: str) -> bool:
    # os.path (not Path) answers False instead of raising on names too long, NUL bytes or symlink loops
    return os.path.exists(text)


def _is_hub_id(text: str) -> bool:
    """``org/name`` as the Hub spells a repo id (one slash, valid characters)."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _is_path_like(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~"))


def _bank_forms() -> str:
    return (f"a built-in bank ({', '.join(BUILTIN_BANKS)}), a local folder, or a Hub repo id 'org/name' "
            "(`masterkey list banks`)")  # fmt: skip


def _unknown(name: str, kind: str, accepted: str, choices: Iterable[str]) -> UnknownNameError:
    close = close_matches(name, choices)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint} Accepted: {accepted}.", name=name, kind=kind,
                            suggestions=close)  # fmt: skip


def parse_bank(ref: str | Path) -> BankRef:
    """Which bank ``ref`` names: an existing local path, a built-in name, a Hub id ``org/name``, or a missing folder
    (in that order; see the module's grammar). Nothing is loaded.

    Raises:
        UnknownNameError: a bare word that is neither a built-in name nor an existing path (a bank on the Hub always
            has an ``org/``), with the closest built-in names.

    Example:
        >>> parse_bank("universal-learned-8").kind, parse_bank("org/convnext-dw").kind, parse_bank("./mine").kind
        ('builtin', 'hub', 'folder')
    """
    text = str(ref)
    if text.strip() and _exists(text):
        return BankRef("folder", text)
    if text in BUILTIN_BANKS:
        return BankRef("builtin", text)
    if _is_hub_id(text):
        return BankRef("hub", text)
    if _is_path_like(text):
        return BankRef("folder", text)
    raise _unknown(text, "bank", _bank_forms(), BUILTIN_BANKS)


def _filters_forms(named: Collection[str]) -> str:
    words = [*FILTER_KEYWORDS, *(n for n in named if n not in FILTER_KEYWORDS)]
    return (f"{', '.join(words)}; {FITTED_PREFIX}<bank> (the 8 keys fitted to a bank; formerly "
            f"{LEGACY_FITTED_PREFIX}<bank>); or a bank: {_bank_forms()}. "
            "`masterkey list filters` lists them")  # fmt: skip


def parse_filters(spec: str | Path | None, *, named: Iterable[str] = ()) -> FiltersSpec:
    """What the filters spec ``spec`` names (see the module's grammar for the order). ``named`` are further names
    registered for the run (``NAMED_FILTERS``, ``extra_filters``); they are never parsed further. Nothing is loaded.

    The deprecated ``universal-<bank>`` (neither a built-in bank nor an existing path) warns with a
    ``FutureWarning`` and parses as ``fitted:<bank>``.

    Raises:
        UnknownNameError: not a keyword, a registered name, ``fitted:<bank>`` or a bank, with the closest names.

    Example:
        >>> parse_filters("universal-learned-8").kind      # the built-in bank, not keys fitted to "learned-8"
        'bank'
        >>> parse_filters("fitted:imagenet-lite0").kind, parse_filters("universal-idealized").keys
        ('fitted', 'idealized')
    """
    if spec is None or str(spec).strip().lower() in SCRATCH_NAMES:
        return FiltersSpec("none" if spec is None else str(spec), "none")
    spec = str(spec)
    named = list(named)
    if spec in ("own", "random"):
        return FiltersSpec(spec, spec)
    if spec in _KEYS_OF:
        return FiltersSpec(spec, "keys", keys=_KEYS_OF[spec])
    if spec in named:
        return FiltersSpec(spec, "named")
    choices = [*FILTER_KEYWORDS, *named, *BUILTIN_BANKS, *(FITTED_PREFIX + b for b in BUILTIN_BANKS)]
    try:
        if spec.startswith(FITTED_PREFIX):
            return FiltersSpec(spec, "fitted", bank=parse_bank(spec[len(FITTED_PREFIX) :]), keys="learned")
        if spec.startswith(LEGACY_FITTED_PREFIX) and spec not in BUILTIN_BANKS and not _exists(spec):
            rest = spec[len(LEGACY_FITTED_PREFIX) :]
            parsed = FiltersSpec(spec, "fitted", bank=parse_bank(rest), keys="learned", deprecated=True)
            warnings.warn(f"--filters {spec!r} is deprecated: write {parsed.canonical!r} (the keys fitted to a "
                          f"bank). The prefix {LEGACY_FITTED_PREFIX!r} collides with the built-in banks "
                          "universal-learned-8 and universal-idealized-8.", FutureWarning, stacklevel=2)  # fmt: skip
            return parsed
        return FiltersSpec(spec, "bank", bank=parse_bank(spec))
    except UnknownNameError:
        raise _unknown(spec, "filters", _filters_forms(named), choices) from None


def canonical_filters(spec: Any) -> Any:
    """``spec`` in the current spelling where it is the deprecated ``universal-<bank>`` (``fitted:<bank>``), quietly;
    anything else unchanged. Recorded runs and results compare their filters through it, so a run recorded under the
    old spelling is the same run under the new one.

    Example:
        >>> canonical_filters("universal-imagenet-lite0"), canonical_filters("universal-learned-8")
        ('fitted:imagenet-lite0', 'universal-learned-8')
    """
    if not isinstance(spec, str) or not spec.startswith(LEGACY_FITTED_PREFIX):
        return spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = parse_filters(spec)
        except UnknownNameError:
            return spec
    return parsed.canonical if parsed.deprecated else spec


def parse_dataset(name: str | Path, *, builtin: Collection[str]) -> DatasetRef:
    """Which dataset ``name`` names, given the ``builtin`` dataset names (``masterkey.training.BUILTIN_DATASETS``
    and any ``extra_datasets``): a built-in name unless a local path has that name, an existing path, a path-like
    name (missing), else a Hub dataset id. Nothing is loaded.

    Example:
        >>> from masterkey.training import BUILTIN_DATASETS
        >>> parse_dataset("digits", builtin=BUILTIN_DATASETS).kind, parse_dataset("uoft-cs/cifar10", builtin=()).kind
        ('builtin', 'hub')
    """
    text = str(name)
    if text.strip() and _exists(text):
        return DatasetRef("folder", text)
    if text in builtin:
        return DatasetRef("builtin", text)
    if _is_path_like(text) and not _is_hub_id(text):
        return DatasetRef("folder", text)
    return DatasetRef("hub", text)
