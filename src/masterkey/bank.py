"""The filter bank: the depthwise kernels of one model plus a manifest, as a Hub artifact.

On disk (a local folder or a Hub model repo) a bank is three files:

- ``filters.safetensors``: one float32 tensor per depthwise conv, keyed by the conv's module path, shaped exactly
  like that conv's weight, ``(out_channels, 1, kh, kw)``;
- ``config.json``: format version, ``library_name``, where the filters came from, the SHA-256 of
  ``filters.safetensors`` (``filters_sha256``) and one manifest entry per kernel (see :class:`KernelSpec`);
- ``README.md``: the model card.

A bank on disk is untrusted input. Reading it never trusts it: ``config.json`` is checked against a schema (types,
ranges, sizes, nesting) before any use, both files are read only when they are regular files no larger than
:data:`MAX_CONFIG_BYTES` / :data:`MAX_FILTERS_BYTES`, kernels must be floating point and finite, and
``filters.safetensors`` must match the SHA-256 recorded in ``config.json``. Every problem raises a
:class:`~masterkey.errors.MasterKeyError` that says what was wrong and what to do. Saving is atomic
(:meth:`FilterBank.save_pretrained`): a killed save leaves the previous bank or the new one, never a broken folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import reprlib
import secrets
import shutil
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub import constants as hf_constants
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .cards import render_card, results_table
from .constants import (
    CARD_NAME,
    CONFIG_NAME,
    FILTERS_NAME,
    FORMAT_VERSION,
    LIBRARY_NAME,
    LIBRARY_VERSION,
    PAPER_MASTER_KEY,
)
from .errors import BankFormatError, BankNotFoundError, InvalidFiltersError

if os.name == "posix":  # flock serializes saves of one folder by several processes (the lock dies with its process)
    import fcntl
else:  # pragma: no cover - Windows: saves of one folder must not overlap
    fcntl = None

__all__ = [
    "FilterBank",
    "KernelSpec",
    "bank_card",
    "layer_positions",
    "relative_depths",
    "scale_positions",
    "stage_index",
    "stage_path",
    "MAX_CONFIG_BYTES",
    "MAX_FILTERS_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_KERNELS",
    "MAX_NAME_LENGTH",
]

# Source fields a bank's config may carry (all optional); anything else passed as source info is kept under "extra".
SOURCE_FIELDS = (
    "source_model", "source_weights", "source_dataset", "source_license", "description",
    "source_hub_id", "source_revision", "source_tag", "timm_version",
    "source_library", "source_class", "source_builder", "source_sha256", "torchvision_version", "transformers_version",
)  # fmt: skip

#: Largest ``config.json`` read, in bytes. A real manifest takes about 350 bytes per kernel (the largest timm
#: models have a few hundred depthwise convs: well under 1 MiB); the cap keeps a hostile file from filling memory.
MAX_CONFIG_BYTES = 16 * 2**20
#: Largest ``filters.safetensors`` read, in bytes: the depthwise kernels of the largest timm models are tens of MB.
MAX_FILTERS_BYTES = 8 * 2**30
#: Deepest nesting of JSON arrays and objects accepted in ``config.json`` (a manifest needs 4 levels).
MAX_JSON_DEPTH = 32
#: Most manifest entries accepted in one bank.
MAX_KERNELS = 100_000
#: Longest kernel name (module path) accepted, in characters.
MAX_NAME_LENGTH = 512
#: Largest integer accepted in a manifest field (channels, kernel sizes, strides, indices): int32, as in the convs.
MAX_INT = 2**31 - 1
#: Kernel dtypes a bank may store; they are read as float32.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_FLOAT_DTYPE_NAMES = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)

# Atomic saves (FilterBank.save_pretrained) write into a staging folder inside the bank folder, which becomes the
# pending folder once complete; the bank files then move from it into the bank folder. Moves never cross a filesystem
# because both live inside the bank folder.
_STAGING_PREFIX = ".masterkey-save-"
_PENDING_NAME = ".masterkey-pending"
# config.json identifies a bank: it moves last (with the pending folder the order does not matter for readers)
_SWAP_ORDER = (FILTERS_NAME, CARD_NAME, CONFIG_NAME)

# values shown in error messages: short, and safe on any input (reprlib bounds length and nesting)
_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlong = 40
_short_repr.maxlevel = 2
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = 4

_MISSING = object()
# the origin named in messages about a config passed in Python rather than read from a file
_GIVEN_CONFIG = "the given config"


class _Invalid(Exception):
    """One field of a manifest entry is wrong; turned into a ``BankFormatError`` that names the entry."""


def _shown(value: Any) -> str:
    return "null" if value is None else f"{_json_kind(value)} {_short_repr.repr(value)}"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "integer"
    if isinstance(value, numbers.Real):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _is_text(value: str) -> bool:
    # JSON can spell lone surrogates ("\\ud800"), which no UTF-8 file (the card, the config) can hold
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int_value(value: Any, field: str, *, minimum: int) -> int:
    # bool is an int in Python and 40.0 a number in JSON: neither is a channel count
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _Invalid(f"'{field}' must be an integer >= {minimum}, found {_shown(value)}")
    if not minimum <= value <= MAX_INT:
        raise _Invalid(f"'{field}' must be an integer in [{minimum}, {MAX_INT}], found {_short_repr.repr(value)}")
    return int(value)


def _pair_value(value: Any, field: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise _Invalid(f"'{field}' must be an integer or a list of 2 integers, found a list of {len(value)}")
        return _int_value(value[0], f"{field}[0]", minimum=1), _int_value(value[1], f"{field}[1]", minimum=1)
    size = _int_value(value, field, minimum=1)
    return size, size


def _spec_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The validated, normalized fields of one manifest entry (raises ``_Invalid`` naming the first bad field)."""
    name = entry.get("name", _MISSING)
    if name is _MISSING:
        raise _Invalid("it has no 'name'")
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > MAX_NAME_LENGTH or not _is_text(name):
        raise _Invalid(f"'name' must be a non-empty string of at most {MAX_NAME_LENGTH} characters without NUL, found "
                       f"{_shown(name)}")
    for field in ("in_channels", "out_channels", "kernel_size"):
        if field not in entry:
            raise _Invalid(f"it has no '{field}'")
    in_channels = _int_value(entry["in_channels"], "in_channels", minimum=1)
    out_channels = _int_value(entry["out_channels"], "out_channels", minimum=1)
    if out_channels % in_channels:
        raise _Invalid(f"'out_channels' ({out_channels}) must be a multiple of 'in_channels' ({in_channels}): a "
                       "depthwise conv has channel_multiplier = out_channels / in_channels filters per input channel")
    multiplier = entry.get("channel_multiplier", _MISSING)  # derived; when written it must agree
    if multiplier is not _MISSING and (
        isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Integral)
        or multiplier != out_channels // in_channels
    ):
        raise _Invalid(f"'channel_multiplier' must equal out_channels / in_channels = {out_channels // in_channels}, "
                       f"found {_shown(multiplier)}")
    depth = entry.get("relative_depth", 0.0)  # recomputed from the names on load; a written one must still be sane
    if isinstance(depth, bool) or not isinstance(depth, numbers.Real) or not (
        math.isfinite(depth) and 0.0 <= depth <= 1.0
    ):
        raise _Invalid(f"'relative_depth' must be a number in [0, 1], found {_shown(depth)}")
    stage = entry.get("stage")
    feature_stride = entry.get("feature_stride")  # absent in banks written before it was recorded
    return {
        "name": name,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": _pair_value(entry["kernel_size"], "kernel_size"),
        "stride": _pair_value(entry.get("stride", 1), "stride"),
        "dilation": _pair_value(entry.get("dilation", 1), "dilation"),
        "index": _int_value(entry.get("index", 0), "index", minimum=0),
        "relative_depth": float(depth),
        "stage": None if stage is None else _int_value(stage, "stage", minimum=0),
        "feature_stride": None if feature_stride is None else _int_value(feature_stride, "feature_stride", minimum=1),
    }


_FIX_ENTRY = (
    "Fix that entry, or download the bank again, or rebuild it with masterkey.extract_filters(...).save_pretrained(...)"
)


@dataclass(frozen=True)
class KernelSpec:
    """Manifest entry of one depthwise kernel.

    ``index`` places the conv among the depthwise convs of its bank in forward order and ``relative_depth`` in
    ``(0, 1)`` is its depth counted in stages (:func:`layer_positions`, derived from the bank's module paths);
    ``stage`` is the first integer in its module path (``stages.2.blocks.0.conv_dw`` -> 2, :func:`stage_index`) or
    ``None``. ``feature_stride`` is the scale of the feature map the conv reads: input pixels per feature-map pixel
    (1, 2, 4, ... 32), measured by :func:`masterkey.extract.feature_strides`; ``None`` in banks written before it was
    recorded. It is what the ``"depth"`` mapping aligns architectures by (:func:`scale_positions`). Every field is
    checked on construction (channels >= 1, ``out_channels`` a multiple of ``in_channels``,
    sizes, strides and dilations >= 1, ``relative_depth`` in [0, 1]): a bad one raises ``BankFormatError``.

    Example:
        >>> KernelSpec("blocks.0.conv_dw", in_channels=16, out_channels=32, kernel_size=(3, 3)).channel_multiplier
        2
    """

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    index: int = 0
    relative_depth: float = 0.0
    stage: int | None = None
    feature_stride: int | None = None

    def __post_init__(self) -> None:
        # one set of rules for specs built in Python and specs read from config.json, so that no bank holds a spec
        # that breaks later (in_channels 0 would divide by zero in channel_multiplier, bank.config, save_pretrained)
        try:
            fields = _spec_fields(self.__dict__)
        except _Invalid as e:
            raise BankFormatError(
                f"Invalid kernel spec {_short_repr.repr(self.__dict__.get('name'))}: {e}. {_FIX_ENTRY}."
            ) from None
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    @property
    def channel_multiplier(self) -> int:
        return self.out_channels // self.in_channels

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, 1, *self.kernel_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kernel_size"] = list(self.kernel_size)
        d["stride"] = list(self.stride)
        d["dilation"] = list(self.dilation)
        d["channel_multiplier"] = self.channel_multiplier
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "") -> KernelSpec:
        """The spec of one manifest entry of ``config.json``; a malformed entry raises ``BankFormatError`` naming the
        entry (``where``, e.g. ``"filters[3] of 'my-bank'"``) and the field.

        Example:
            >>> KernelSpec.from_dict({"name": "x", "in_channels": 8, "out_channels": 8, "kernel_size": 3}).shape
            (8, 1, 3, 3)
        """
        try:
            if not isinstance(d, Mapping):
                raise _Invalid(f"it is {_shown(d)}, not an object")
            return cls(**_spec_fields(d))
        except _Invalid as e:
            label = where or "in " + CONFIG_NAME
            name = d.get("name") if isinstance(d, Mapping) else None
            named = f" ({_short_repr.repr(name)})" if isinstance(name, str) else ""
            raise BankFormatError(
                f"Malformed manifest entry {label}{named}: {e}. Each entry needs 'name', 'in_channels', "
                f"'out_channels' and 'kernel_size'. {_FIX_ENTRY}."
            ) from None


def _layer(name: str) -> str:
    # the splits of a MixedConv2d are children 0, 1, ... of one module: one layer
    head, _, last = name.rpartition(".")
    return head if head and last.isdigit() else name


def stage_path(name: str) -> str:
    """The stage a module path belongs to: the path up to its first integer (``stages.2.blocks.0.conv_dw`` ->
    ``stages.2``), or ``""`` when it has none.

    Example:
        >>> stage_path("stages.2.blocks.0.conv_dw")
        'stages.2'
    """
    parts = name.split(".")
    # isdecimal, not isdigit: "²" is a digit that int() cannot read
    digits = [i for i, part in enumerate(parts) if part.isdecimal()]
    return ".".join(parts[: digits[0] + 1]) if digits else ""


def stage_index(name: str) -> int | None:
    """The stage number of a module path: its first integer (``stages.2.blocks.0.conv_dw`` -> 2), or ``None``.

    Example:
        >>> stage_index("stages.2.blocks.0.conv_dw")
        2
    """
    path = stage_path(name)
    return int(path.rpartition(".")[2]) if path else None


def _spread(keys: list[str]) -> list[float]:
    # position of each key among equal keys, evenly spread in (0, 1): 3 keys sit at 1/6, 1/2, 5/6
    size, seen, spread = Counter(keys), Counter(), []
    for key in keys:
        spread.append((seen[key] + 0.5) / size[key])
        seen[key] += 1
    return spread


def layer_positions(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``(relative depth, position among its layer's splits)`` of each depthwise conv, both in ``(0, 1)``, from the
    module paths in forward order. This is masterkey's one definition of **relative depth**: depth is counted in
    stages (:func:`stage_path`): stage ``k`` of ``S`` covers ``[k/S, (k+1)/S)`` and its layers spread evenly inside
    it, so the last stage of a ConvNeXt meets the last stage of an EfficientNet whatever their lengths. Convs whose
    paths differ only in a final index (the splits of a ``MixedConv2d``) form one layer and share its depth.

    Example:
        >>> layer_positions(["stages.0.conv", "stages.1.a.conv", "stages.1.b.conv"])["stages.1.b.conv"]
        (0.875, 0.5)
    """
    layers = list(dict.fromkeys(_layer(n) for n in names))  # forward order
    # position of each stage by lookup, not list.index: linear in the number of layers, whatever a manifest holds
    stages = {stage: i for i, stage in enumerate(dict.fromkeys(stage_path(layer) for layer in layers))}
    depth = {
        layer: (stages[stage_path(layer)] + within) / len(stages)
        for layer, within in zip(layers, _spread([stage_path(layer) for layer in layers]))
    }
    return {n: (depth[_layer(n)], split) for n, split in zip(names, _spread([_layer(n) for n in names]))}


def scale_positions(specs: Sequence[KernelSpec]) -> dict[str, tuple[int, float, float]] | None:
    """``(feature stride, position among the layers of that scale, position among its layer's splits)`` of each
    spec, or ``None`` when any spec lacks its ``feature_stride``. This is the structure the ``"depth"`` mapping aligns
    two architectures by, whatever their module names: the scale of the feature map a filter reads, then where its
    layer sits among the layers reading that scale (in forward order, spread evenly in ``(0, 1)``), so two copies of
    one architecture line up one to one. Splits of one ``MixedConv2d`` form one layer, as in :func:`layer_positions`.

    Example:
        >>> specs = [KernelSpec(n, in_channels=8, out_channels=8, kernel_size=(3, 3), feature_stride=s)
        ...          for n, s in [("features.1.conv", 2), ("features.2.conv", 2), ("features.3.conv", 4)]]
        >>> scale_positions(specs)["features.2.conv"]
        (2, 0.75, 0.5)
    """
    if any(spec.feature_stride is None for spec in specs):
        return None
    names = [spec.name for spec in specs]
    stride_of = {_layer(spec.name): spec.feature_stride for spec in specs}
    layers = list(dict.fromkeys(_layer(n) for n in names))  # forward order
    # layers are grouped by the scale they read; a key per scale makes _spread place them within it
    within = dict(zip(layers, _spread([str(stride_of[layer]) for layer in layers])))
    return {
        n: (stride_of[_layer(n)], within[_layer(n)], split)
        for n, split in zip(names, _spread([_layer(n) for n in names]))
    }


def relative_depths(names: Sequence[str]) -> list[float]:
    """The relative depth (:func:`layer_positions`) of each of ``names``, in order.

    Example:
        >>> relative_depths(["stages.0.conv", "stages.1.conv"])
        [0.25, 0.75]
    """
    positions = layer_positions(names)
    return [positions[n][0] for n in names]


class FilterBank(
    ModelHubMixin,
    library_name=LIBRARY_NAME,
    tags=["masterkey", "depthwise-filters", "filter-bank"],
    paper_url=PAPER_MASTER_KEY,
):
    """The depthwise kernels of one model plus a manifest, saved as safetensors.

    Build one with :func:`masterkey.extract_filters`, load one with :func:`masterkey.load_master_filters` or
    ``FilterBank.from_pretrained``, save it with ``save_pretrained`` and publish it with ``push_to_hub``.

    ``filters`` maps kernel names to floating-point tensors shaped like their manifest entries; ``config`` is the
    ``config.json`` content (:func:`make_config`). Both are checked: a malformed config raises ``BankFormatError``,
    kernels that are not finite floating-point tensors ``InvalidFiltersError``.

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))
        >>> bank.names[0], tuple(bank[bank.names[0]].shape)
        ('blocks.0.0.conv_dw', (16, 1, 3, 3))
        >>> bank.save_pretrained("my-bank")  # filters.safetensors, config.json, README.md
    """

    def __init__(self, filters: Mapping[str, torch.Tensor], config: Mapping[str, Any]):
        if not isinstance(config, Mapping):
            raise BankFormatError(f"A bank's config must be a dict (see masterkey.bank.make_config), not {_shown(config)}.")
        config = dict(config)
        config.setdefault("format_version", FORMAT_VERSION)
        config.setdefault("library_name", LIBRARY_NAME)
        specs = sorted(_check_config(config, origin=_GIVEN_CONFIG), key=lambda s: s.index)
        kernels = _as_kernels(filters, origin="the given filters")
        _validate(kernels, {spec.name: spec for spec in specs}, origin="the given filters")
        # relative depth is derived from the module paths (one definition everywhere), whatever a file says
        depths = relative_depths([spec.name for spec in specs])
        self._specs = {spec.name: replace(spec, relative_depth=d) for spec, d in zip(specs, depths)}
        self._filters = kernels
        # filters_sha256 describes one file, not the bank: save_pretrained records the hash of the file it writes
        self._config = {k: v for k, v in config.items() if k not in ("filters", "filters_sha256")}

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls, filters: Mapping[str, torch.Tensor], *, specs: list[KernelSpec] | None = None, **source_info: Any
    ) -> FilterBank:
        """Build a bank from kernels shaped ``(out_channels, 1, kh, kw)`` (or ``(n, kh, kw)``), in the given order.

        Without ``specs`` each kernel gets a plain manifest entry (multiplier 1, stride 1, relative depth from its
        position). ``source_info`` (``source_model``, ``source_weights``, ``source_dataset``, ``source_license``,
        ``description``, or anything else) is written to ``config.json``.

        Raises:
            InvalidFiltersError: ``filters`` is not a mapping of names to tensors of those shapes, a kernel is empty,
                not floating point, or holds NaN or Inf.

        Example:
            >>> bank = FilterBank.from_tensors({"layer0": torch.randn(8, 1, 3, 3)}, source_dataset="noise")
            >>> bank.spec("layer0").kernel_size
            (3, 3)
        """
        if not isinstance(filters, Mapping):
            raise InvalidFiltersError(
                f"FilterBank.from_tensors expects a dict {{name: tensor}}, not {type(filters).__name__}: pass e.g. "
                "{'layer0': torch.randn(8, 1, 3, 3)}."
            )
        tensors = {}
        for name, t in filters.items():
            if not isinstance(name, str):
                raise InvalidFiltersError(f"Kernel names must be strings (module paths), found {_shown(name)}.")
            if not isinstance(t, torch.Tensor):
                raise InvalidFiltersError(
                    f"Kernel {name!r} is a {type(t).__name__}, not a tensor: pass torch tensors shaped "
                    "(out_channels, 1, kh, kw) or (n, kh, kw)."
                )
            if t.dim() == 3:
                t = t.reshape(t.shape[0], 1, *t.shape[-2:])
            if t.dim() != 4 or t.shape[1] != 1 or t.numel() == 0:
                raise InvalidFiltersError(
                    f"Kernel {name!r} has shape {tuple(t.shape)}; expected a non-empty (out_channels, 1, kh, kw) or "
                    "(n, kh, kw) tensor of depthwise kernels."
                )
            tensors[name] = t
        if specs is None:
            specs = [
                KernelSpec(
                    name=name,
                    in_channels=t.shape[0],
                    out_channels=t.shape[0],
                    kernel_size=(t.shape[2], t.shape[3]),
                    index=i,
                    stage=stage_index(name),
                )
                for i, (name, t) in enumerate(tensors.items())
            ]
        return cls(tensors, make_config(specs, **source_info))

    # -- mapping-like access -----------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Kernel names (module paths) in depth order."""
        return list(self._specs)

    @property
    def specs(self) -> list[KernelSpec]:
        """Manifest entries in depth order."""
        return list(self._specs.values())

    def spec(self, name: str) -> KernelSpec:
        return self._specs[name]

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._filters[name]
        except KeyError:
            raise KeyError(f"{name!r} is not in this bank; its entries are bank.names ({len(self)} kernels)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._filters

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self._filters[name]) for name in self._specs)

    @property
    def config(self) -> dict[str, Any]:
        """The full ``config.json`` content, manifest included."""
        return {**self._config, "filters": [spec.to_dict() for spec in self._specs.values()]}

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self._filters.values())

    @property
    def kernel_sizes(self) -> list[tuple[int, int]]:
        return sorted({spec.kernel_size for spec in self._specs.values()})

    def __repr__(self) -> str:
        src = self._config.get("source_model") or "unknown source"
        sizes = ", ".join(f"{h}x{w}" for h, w in self.kernel_sizes)
        return f"FilterBank({src}: {len(self)} depthwise kernels, {self.num_parameters:,} parameters, kernels {sizes})"

    # -- Hub serialization -------------------------------------------------------------------------------------
    def _file_contents(self, card: ModelCard | None = None) -> dict[str, bytes]:
        """The bytes of the bank's files (the card when given), in the order they are swapped in."""
        filters = save_safetensors(dict(self.items()), metadata={"format": "pt"})
        config = {k: v for k, v in self.config.items() if k != "filters"}
        config["filters_sha256"] = hashlib.sha256(filters).hexdigest()  # checked on load: damage cannot pass
        config["filters"] = [spec.to_dict() for spec in self._specs.values()]
        files = {FILTERS_NAME: filters}
        if card is not None:
            files[CARD_NAME] = str(card).encode("utf-8")
        files[CONFIG_NAME] = (json.dumps(config, indent=2, allow_nan=False) + "\n").encode("utf-8")
        return files

    def _save_pretrained(self, save_directory: Path) -> None:
        # ModelHubMixin's hook, kept for code that calls it; save_pretrained below writes atomically instead
        for name, data in self._file_contents().items():
            (Path(save_directory) / name).write_bytes(data)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write ``filters.safetensors``, ``config.json`` (with the SHA-256 of ``filters.safetensors``) and a fresh
        ``README.md`` (from ``model_card_kwargs``, see :func:`bank_card`) into ``save_directory``, atomically; other
        files in the folder are left alone. With ``push_to_hub=True``, push to ``repo_id`` (default: the folder
        name) afterwards, as ``huggingface_hub.ModelHubMixin`` does; ``config`` is passed on to ``push_to_hub``
        (the bank always writes its own ``config.json``).

        Atomic: the new files are written and fsynced in a staging folder inside ``save_directory``, which is then
        renamed to ``.masterkey-pending`` (the commit point) before its files are moved over the old ones. Until the
        rename the folder holds the old bank; after it, loading takes any bank file still in ``.masterkey-pending``
        from there, so it reads the new bank. Whenever the process dies, ``from_pretrained`` therefore loads the old
        bank or the new one; the next save finishes or removes what a killed save left. Names starting with
        ``.masterkey-`` in the folder are reserved for this.

        Example:
            >>> bank.save_pretrained("my-bank")  # my-bank/filters.safetensors, config.json, README.md
        """
        folder = Path(save_directory)
        model_card_kwargs = model_card_kwargs if model_card_kwargs is not None else {}
        # everything is computed before the disk is touched: a bad card argument changes nothing
        _write_bank_folder(folder, self._file_contents(self.generate_model_card(**model_card_kwargs)))
        if push_to_hub:
            kwargs = dict(push_to_hub_kwargs)
            config = config if config is not None else self._hub_mixin_config
            if config is not None:
                kwargs["config"] = config
            return self.push_to_hub(repo_id=repo_id or folder.name, model_card_kwargs=model_card_kwargs, **kwargs)
        return None

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return bank_card(self, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> FilterBank:
        """Load a bank from a local folder or a Hub repo id (cached by ``huggingface_hub``; works offline with
        ``HF_HUB_OFFLINE=1`` once cached). Only safetensors are read: nothing is ever unpickled. ``config.json`` is
        validated before use, files must be regular files under a size cap, kernels floating point and finite, and
        ``filters.safetensors`` must match the SHA-256 recorded in ``config.json`` (banks saved before masterkey
        recorded it load without that check).

        Keyword arguments: ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``.

        Raises:
            BankNotFoundError: not a local folder, not on the Hub, or not cached while offline.
            BankFormatError: a file is missing, not a regular file, too large, malformed, or damaged.
            InvalidFiltersError: a kernel holds NaN or Inf.

        Example:
            >>> bank = FilterBank.from_pretrained("my-bank")
        """
        source = str(pretrained_model_name_or_path)
        # os.path (not Path) answers False instead of raising on names too long, NUL bytes or symlink loops
        if os.path.exists(source) and not os.path.isdir(source):
            raise BankNotFoundError(
                f"{source!r} is a file; a bank is a folder holding {FILTERS_NAME} and {CONFIG_NAME} (or a Hub repo id)."
            )
        # ModelHubMixin.from_pretrained is bypassed: it would parse config.json with no size or nesting limit
        options = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "token", "force_download")
                   if k in kwargs}  # fmt: skip
        try:
            return cls._from_pretrained(
                model_id=source,
                revision=options.get("revision"),
                cache_dir=options.get("cache_dir"),
                force_download=bool(options.get("force_download", False)),
                local_files_only=bool(options.get("local_files_only", False)),
                token=options.get("token"),
                **kwargs,
            )
        except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as e:
            raise _not_found(source, options, e) from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> FilterBank:
        if os.path.isdir(model_id):
            return cls._from_folder(Path(model_id), config=config)

        def fetch(filename: str) -> Path:
            try:
                return Path(
                    hf_hub_download(
                        repo_id=model_id,
                        filename=filename,
                        revision=revision,
                        cache_dir=cache_dir,
                        force_download=force_download,
                        local_files_only=local_files_only,
                        token=token,
                        library_name=LIBRARY_NAME,
                        library_version=LIBRARY_VERSION,
                    )
                )
            except LocalEntryNotFoundError:
                raise  # not cached while offline: a subclass of EntryNotFoundError, reported as not found
            except EntryNotFoundError:
                raise BankFormatError(f"The Hub repo {model_id!r} has no {filename}: it is not a masterkey bank.") from None

        if config is None:
            config = _read_config(fetch(CONFIG_NAME), origin=model_id)
        specs = _check_config(config, origin=repr(model_id))  # before downloading the filters
        return cls._assemble(_read_bytes(fetch(FILTERS_NAME), limit=MAX_FILTERS_BYTES, origin=model_id), config, specs,
                             origin=model_id)  # fmt: skip

    @classmethod
    def _from_folder(cls, folder: Path, *, config: dict[str, Any] | None = None) -> FilterBank:
        origin = str(folder)
        for attempt in range(3):
            paths, identity = _bank_paths(folder)
            try:
                cfg = config if config is not None else _read_config(paths[CONFIG_NAME], origin=origin)
                specs = _check_config(cfg, origin=repr(origin))
                return cls._assemble(_read_bytes(paths[FILTERS_NAME], limit=MAX_FILTERS_BYTES, origin=origin), cfg,
                                     specs, origin=origin)  # fmt: skip
            except (BankFormatError, InvalidFiltersError):
                # a save that finished while these files were read swaps them (new inodes): read again; otherwise
                # the files themselves are wrong
                if attempt == 2 or _bank_paths(folder)[1] == identity:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @classmethod
    def _assemble(cls, data: bytes, config: dict[str, Any], specs: list[KernelSpec], *, origin: str) -> FilterBank:
        digest = hashlib.sha256(data).hexdigest()  # the bytes read once: hashed, then parsed from memory
        tensors = _parse_filters(data, origin=origin)
        del data  # the only reference: a large file is not held twice while the kernels are checked
        # the specific diagnoses (missing kernels, shapes, NaN) first: they say more than a hash mismatch
        _validate(tensors, {spec.name: spec for spec in specs}, origin=repr(origin))
        recorded = config.get("filters_sha256")
        # banks saved before masterkey recorded the hash have none: they load as before, without this check
        if recorded is not None and recorded != digest:
            raise BankFormatError(
                f"{FILTERS_NAME} of {origin!r} does not match the SHA-256 recorded in {CONFIG_NAME}: the file is "
                "damaged or was changed; download or save the bank again."
            )
        return cls(tensors, config)


def make_config(specs: list[KernelSpec], **source_info: Any) -> dict[str, Any]:
    """``config.json`` content for ``specs``; source fields go to the top level, other keys under ``extra``.

    Example:
        >>> make_config([KernelSpec("x", in_channels=8, out_channels=8, kernel_size=(3, 3))], source_dataset="noise")
        {'format_version': 1, 'library_name': 'masterkey', 'source_dataset': 'noise', 'num_kernels': 1, 'filters': [...]}
    """
    config: dict[str, Any] = {"format_version": FORMAT_VERSION, "library_name": LIBRARY_NAME}
    extra = {}
    for key, value in source_info.items():
        if value is None:
            continue
        (config if key in SOURCE_FIELDS else extra)[key] = value
    if extra:
        config["extra"] = extra
    config["num_kernels"] = len(specs)
    config["filters"] = [spec.to_dict() for spec in specs]
    return config


# -- reading: every input checked before use --------------------------------------------------------------------------
def _read_config(path: Path, *, origin: str) -> Any:
    data = _read_bytes(path, limit=MAX_CONFIG_BYTES, origin=origin)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BankFormatError(f"{path} is not valid JSON (not UTF-8: {e}); save or download the bank again.") from None
    except RecursionError:  # nesting deep enough to exhaust the parser's stack
        raise BankFormatError(
            f"{path} is not a bank config: its JSON is nested deeper than {MAX_JSON_DEPTH} levels; save or download "
            "the bank again."
        ) from None
    except ValueError as e:  # JSONDecodeError, and integers longer than Python converts
        raise BankFormatError(f"{path} is not valid JSON ({e}); save or download the bank again.") from None


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")]  # fmt: skip
    return next((kind for test, kind in kinds if test(mode)), "special file")


def _read_bytes(path: Path, *, limit: int, origin: str) -> bytes:
    """The content of ``path`` when it is a regular file of at most ``limit`` bytes (symlinks followed).

    The type is checked before opening (a FIFO would block ``open`` forever, ``/dev/zero`` never ends), and again on
    the open descriptor (opened non-blocking) in case the path changed in between.
    """
    again = "download or save the bank again"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise BankFormatError(f"{path} is a symbolic link to nothing; {again}.") from None
        raise BankFormatError(f"{origin!r} has no {path.name}: it is not a masterkey filter bank.") from None
    except OSError as e:  # a symlink loop, a name too long, no permission
        raise BankFormatError(f"Cannot read {path} ({e.strerror or e}); {again}.") from None
    except ValueError as e:  # a NUL byte in the path
        raise BankFormatError(f"Cannot read {path!r} ({e}).") from None

    def check(info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise BankFormatError(f"{path} is not a regular file (it is a {_file_kind(info.st_mode)}); {again}.")
        if info.st_size > limit:
            raise BankFormatError(
                f"{path} is too large ({info.st_size:,} bytes; masterkey reads at most {limit:,} for a "
                f"{path.name}); {again}."
            )

    check(info)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BankFormatError(f"Cannot open {path} ({e.strerror or e}); {again}.") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        check(info)
        try:
            data = f.read(info.st_size)
            grew = f.read(1)
        except OSError as e:
            raise BankFormatError(f"Cannot read {path} ({e.strerror or e}); {again}.") from None
    if len(data) != info.st_size or grew:
        raise BankFormatError(f"{path} changed while it was read; read it again when it is written, or {again}.")
    return data


def _parse_filters(data: bytes, *, origin: str) -> dict[str, torch.Tensor]:
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError, KeyError, RuntimeError, OverflowError) as e:
        raise BankFormatError(
            f"Cannot read {FILTERS_NAME} of {origin!r}: {e}. The file is truncated or not safetensors; download or "
            "save the bank again."
        ) from None
    for name, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            raise BankFormatError(
                f"{FILTERS_NAME} of {origin!r}: kernels must be floating point ({_FLOAT_DTYPE_NAMES}); found "
                f"{str(t.dtype).removeprefix('torch.')} in {name!r}. Save the bank again from float weights "
                "(masterkey.extract_filters), or download it again."
            )
    return {name: t.to(torch.float32) for name, t in tensors.items()}


def _as_kernels(filters: Any, *, origin: str) -> dict[str, torch.Tensor]:
    """``filters`` as float32 CPU tensors, refusing what is not a floating-point tensor with data."""
    if not isinstance(filters, Mapping):
        raise InvalidFiltersError(f"The filters of a bank are a dict {{name: tensor}}, not {type(filters).__name__}.")
    kernels = {}
    for name, t in filters.items():
        if not isinstance(t, torch.Tensor):
            raise InvalidFiltersError(f"Kernel {_short_repr.repr(name)} of {origin} is a {type(t).__name__}, not a tensor.")
        if t.dtype not in FLOAT_DTYPES:
            raise InvalidFiltersError(
                f"Kernels must be floating point ({_FLOAT_DTYPE_NAMES}); found {str(t.dtype).removeprefix('torch.')} "
                f"in {_short_repr.repr(name)} of {origin}. Convert them with .float()."
            )
        if t.is_meta:
            raise InvalidFiltersError(
                f"Kernel {_short_repr.repr(name)} of {origin} is on the meta device: it holds no values. Load the "
                "weights first."
            )
        kernels[name] = t.detach().to("cpu", torch.float32).contiguous()
    return kernels


def _check_json(document: Any, *, origin: str) -> None:
    """Nesting depth and finite numbers everywhere, walked without recursion (a hostile file cannot overflow it)."""
    source = origin if origin == _GIVEN_CONFIG else f"{CONFIG_NAME} of {origin}"
    stack: list[tuple[Any, int, tuple]] = [(document, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
            raise BankFormatError(
                f"{source} holds a non-finite number ({node}) at {where or 'the top level'}: JSON numbers must be "
                "finite (no NaN, Infinity or 1e999). Fix it, or save or download the bank again."
            )
        if isinstance(node, (dict, list, tuple)):
            if depth > MAX_JSON_DEPTH:
                raise BankFormatError(
                    f"{source} is nested deeper than {MAX_JSON_DEPTH} levels; a bank config needs 4. Save or "
                    "download the bank again."
                )
            children = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((value, depth + 1, (*path, key)) for key, value in children)


def _check_config(config: Any, *, origin: str) -> list[KernelSpec]:
    """The manifest of a validated ``config.json`` (``origin`` names it in messages); any deviation from the schema
    raises ``BankFormatError`` naming the field and the entry."""
    source = origin if origin == _GIVEN_CONFIG else f"{CONFIG_NAME} of {origin}"
    if not isinstance(config, Mapping) or "filters" not in config:
        held = "" if isinstance(config, Mapping) else f": it holds {_json_kind(config)}, not an object"
        raise BankFormatError(
            f"{source} is not a masterkey bank config (no 'filters' manifest{held}). "
            "Rebuild it with masterkey.extract_filters(...).save_pretrained(...)."
        )
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise BankFormatError(
            f"{origin} uses filter-bank format version {_short_repr.repr(version)}; this masterkey ({LIBRARY_VERSION}) "
            f"reads versions 1 to {FORMAT_VERSION}. Upgrade masterkey (pip install -U masterkey)."
        )
    _check_json(config, origin=origin)
    fix = f"Fix it in {CONFIG_NAME}, or save or download the bank again."
    for field in (*SOURCE_FIELDS, "library_name"):
        if config.get(field) is not None and not (isinstance(config[field], str) and _is_text(config[field])):
            raise BankFormatError(f"'{field}' in {source} must be a string (valid Unicode) or null, found "
                                  f"{_shown(config[field])}. {fix}")  # fmt: skip
    if "extra" in config and not isinstance(config["extra"], Mapping):
        raise BankFormatError(f"'extra' in {source} must be an object, found {_shown(config['extra'])}. "
                              f"{fix}")  # fmt: skip
    digest = config.get("filters_sha256", _MISSING)
    if digest is not _MISSING and not (
        isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        raise BankFormatError(f"'filters_sha256' in {source} must be 64 lowercase hex digits, found "
                              f"{_shown(digest)}. Save or download the bank again.")  # fmt: skip
    entries = config["filters"]
    if not isinstance(entries, (list, tuple)):
        raise BankFormatError(f"'filters' in {source} must be a list of manifest entries, found "
                              f"{_shown(entries)}. {fix}")  # fmt: skip
    if not entries:
        raise BankFormatError(f"The manifest of {origin} lists no kernels; a bank holds at least one.")
    if len(entries) > MAX_KERNELS:
        raise BankFormatError(f"The manifest of {origin} lists {len(entries):,} kernels; masterkey reads at most "
                              f"{MAX_KERNELS:,}. {fix}")  # fmt: skip
    count = config.get("num_kernels", len(entries))
    if isinstance(count, bool) or count != len(entries):
        raise BankFormatError(f"'num_kernels' in {source} is {_shown(count)} but the manifest lists "
                              f"{len(entries)} kernels. {fix}")  # fmt: skip
    specs, seen = [], {}
    for i, entry in enumerate(entries):
        spec = KernelSpec.from_dict(entry, where=f"filters[{i}] in {source}")
        if spec.name in seen:
            raise BankFormatError(f"Malformed manifest entry filters[{i}] in {source}: it repeats the "
                                  f"name {spec.name!r} of filters[{seen[spec.name]}]. {_FIX_ENTRY}.")  # fmt: skip
        seen[spec.name] = i
        specs.append(spec)
    return specs


def _validate(filters: Mapping[str, torch.Tensor], specs: Mapping[str, KernelSpec], *, origin: str) -> None:
    """Tensors and manifest must describe the same kernels, with finite values."""
    if not specs:
        raise BankFormatError(f"The manifest of {origin} lists no kernels; a bank holds at least one.")
    missing = [n for n in specs if n not in filters]
    extra = [n for n in filters if n not in specs]
    if missing or extra:
        raise BankFormatError(
            f"The tensors and the manifest of {origin} disagree: in the manifest only {_short_repr.repr(missing)}, in "
            f"the tensors only {_short_repr.repr(extra)}. Rebuild the bank with masterkey.extract_filters."
        )
    wrong = {n: (tuple(filters[n].shape), s.shape) for n, s in specs.items() if tuple(filters[n].shape) != s.shape}
    if wrong:
        details = "; ".join(f"{n}: tensor {got}, manifest {want}" for n, (got, want) in list(wrong.items())[:10])
        raise BankFormatError(f"Tensor shapes disagree with the manifest of {origin}: {details}.")
    if torch.isfinite(torch.cat([t.reshape(-1) for t in filters.values()])).all():
        return  # one pass over all values; per-kernel only to name the culprits
    bad = [n for n, t in filters.items() if not torch.isfinite(t).all()]
    if bad:
        raise InvalidFiltersError(
            f"{len(bad)} kernel(s) of {origin} hold NaN or Inf values: {bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}. Re-extract them from a model with finite weights."
        )


def _bank_paths(folder: Path) -> tuple[dict[str, Path], tuple]:
    """Where ``config.json`` and ``filters.safetensors`` of a local bank are, and an identity of those files.

    A save that died after its commit point left the complete new bank in ``.masterkey-pending``: the files still
    there are newer than those in the folder (a file moves out of it only to replace the folder's one). The identity
    (inode and modification time of each) changes when a save swaps a file in while it is read.
    """
    paths = {name: folder / name for name in (CONFIG_NAME, FILTERS_NAME)}
    pending = folder / _PENDING_NAME
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(pending).st_mode):
            for name in paths:
                if os.path.lexists(pending / name):
                    paths[name] = pending / name
    identity = []
    for path in paths.values():
        try:
            info = os.stat(path)
            identity.append((str(path), info.st_ino, info.st_mtime_ns, info.st_size))
        except (OSError, ValueError):
            identity.append((str(path), None))
    return paths, tuple(identity)


# -- saving: atomic -------------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    # makes renames inside the folder durable; directories cannot be opened on Windows (renames are durable there)
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories; the renames are still atomic
        pass
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a bank folder for one save; released when the save ends or its process dies."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _finish_interrupted_save(folder: Path) -> None:
    """Complete a save that died after its commit point (move the rest of ``.masterkey-pending`` in) and remove the
    staging folders of saves that died before it. Called under the folder lock, so no other save is running."""
    pending = folder / _PENDING_NAME
    if os.path.lexists(pending):
        if stat.S_ISDIR(os.lstat(pending).st_mode):
            for name in _SWAP_ORDER:
                if os.path.lexists(pending / name):
                    os.replace(pending / name, folder / name)
            _fsync_dir(folder)
            shutil.rmtree(pending)
        else:  # not ours: nothing a reader would use
            os.unlink(pending)
        _fsync_dir(folder)
    for stale in folder.glob(_STAGING_PREFIX + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _write_bank_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into ``folder`` atomically (see :meth:`FilterBank.save_pretrained`)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        for name in files:  # before anything moves: a directory cannot be replaced by a file
            target = folder / name
            if os.path.isdir(target) and not os.path.islink(target):
                raise BankFormatError(
                    f"Cannot save a bank into {folder}: its {name} is a directory. Remove or rename it, or save to "
                    "another folder."
                )
        _finish_interrupted_save(folder)
        staging = folder / f"{_STAGING_PREFIX}{secrets.token_hex(8)}"
        staging.mkdir()
        try:
            for name, data in files.items():
                _write_durably(staging / name, data)
            _fsync_dir(staging)
            os.rename(staging, folder / _PENDING_NAME)  # the commit point: from here on, readers see the new bank
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(folder)
        _finish_interrupted_save(folder)


def _not_found(source: str, kwargs: Mapping[str, Any], error: Exception) -> BankNotFoundError:
    if isinstance(error, HFValidationError):
        hint = "It is neither an existing local folder nor a valid Hub repo id ('org/name')."
    elif isinstance(error, LocalEntryNotFoundError):
        offline = hf_constants.is_offline_mode() or kwargs.get("local_files_only")
        hint = (
            "It is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True): "
            "download it once while online, or pass a local folder."
            if offline
            else "The Hub could not be reached and it is not in the Hugging Face cache."
        )
    elif isinstance(error, RevisionNotFoundError):
        hint = f"The revision {kwargs.get('revision')!r} does not exist in that repo."
    else:
        revision = kwargs.get("revision")
        at = f" at revision {revision!r}" if revision else ""
        hint = f"No such repo{at} on the Hub (or it is private: pass token=...)."
    return BankNotFoundError(f"Filter bank {source!r} not found. {hint}")


# -- the bank's model card -------------------------------------------------------------------------------------------
def _layer_summary(bank: FilterBank) -> str:
    by_stage: dict[Any, list] = {}
    for spec in bank.specs:
        by_stage.setdefault(spec.stage, []).append(spec)
    lines = [
        f"The bank holds **{len(bank)}** depthwise kernels ({bank.num_parameters:,} parameters).",
        "",
        "| stage | convs | channels | kernel sizes | relative depth |",
        "|---|---|---|---|---|",
    ]
    for stage, specs in by_stage.items():
        sizes = Counter(f"{s.kernel_size[0]}x{s.kernel_size[1]}" for s in specs)
        channels = sorted({s.out_channels for s in specs})
        lines.append(
            f"| {'-' if stage is None else stage} | {len(specs)} | {', '.join(map(str, channels))} | "
            f"{', '.join(f'{k} ({v})' for k, v in sizes.items())} | "
            f"{specs[0].relative_depth:.2f} - {specs[-1].relative_depth:.2f} |"
        )
    return "\n".join(lines)


_USAGE = """```python
import masterkey

bank = masterkey.load_master_filters("{repo_id}")
# inject into a fresh {example_model} and freeze the depthwise kernels; everything else stays trainable
model = masterkey.from_pretrained_filters("{example_model}", bank, num_classes=10{extra_kwargs})
print(model.masterkey_report.parameters)
```"""


_TORCHVISION_USAGE = """```python
import masterkey
import torchvision

bank = masterkey.load_master_filters("{repo_id}")
# inject into a fresh torchvision {builder} and freeze the depthwise kernels; everything else stays trainable
model = masterkey.from_pretrained_filters(torchvision.models.{builder}(num_classes=10), bank)
print(model.masterkey_report.parameters)
```"""


def bank_card(
    bank: FilterBank,
    *,
    repo_id: str | None = None,
    title: str | None = None,
    summary: str | None = None,
    results: Sequence[EvalResult] = (),
    sections: Sequence[tuple[str, str]] = (),
    example_model: str | None = None,
    usage: str | None = None,
    results_text: str | None = None,
    credits: Sequence[str] = (),
) -> ModelCard:
    """The model card of a bank: metadata (``library_name: masterkey``, licence, tags, ``base_model`` for a bank of a
    Hub checkpoint, ``model-index`` eval results when given), where the filters came from (checkpoint, commit, tag,
    licence), a layer summary, a runnable snippet (``usage`` replaces it), results (``results_text`` replaces their
    plain table) and extra ``sections``, and credits. ``FilterBank.save_pretrained`` writes it; its keyword arguments come from
    ``save_pretrained(..., model_card_kwargs=...)``.

    Example:
        >>> card = bank_card(bank, repo_id="org/lite0-imagenet-dw")
        >>> card.save("README.md")
    """
    cfg = bank.config
    source_model = cfg.get("source_model") or "unknown"
    repo_id = repo_id or f"your-org/{source_model}-dw"
    results = list(results)
    licence = _license_id(cfg.get("source_license"))
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=licence,
        # an unlisted licence keeps its own name (the bank's licence follows its weights')
        license_name=str(cfg["source_license"]).strip().lower().replace(" ", "-") if licence == "other" else None,
        base_model=cfg.get("source_hub_id"),
        tags=["masterkey", "depthwise-filters", "filter-bank", "image-classification", "timm"],
        datasets=[cfg["source_dataset"]] if cfg.get("source_dataset") else None,
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )
    hub_id = cfg.get("source_hub_id")
    library = cfg.get("source_library")  # banks from before it was recorded came from timm
    source_rows = [
        (f"source architecture ({library or 'timm'})", f"`{source_model}`"),
        *([("source class", f"`{cfg['source_class']}`")] if cfg.get("source_class") else []),
        ("source weights", cfg.get("source_weights") or "not recorded"),
        *([("SHA-256 of the weights file", f"`{cfg['source_sha256']}`")] if cfg.get("source_sha256") else []),
        *([("checkpoint on the Hub", f"[`{hub_id}`](https://huggingface.co/{hub_id})")] if hub_id else []),
        *([("commit of the weights", f"`{cfg['source_revision']}`")] if cfg.get("source_revision") else []),
        *([(f"pretrained tag ({library or 'timm'})", f"`{cfg['source_tag']}`")] if cfg.get("source_tag") else []),
        ("training dataset", cfg.get("source_dataset") or "not recorded"),
        ("licence of the weights", cfg.get("source_license") or "not recorded"),
        *[(f"{name} version", cfg[f"{name}_version"]) for name in ("timm", "torchvision", "transformers")
          if cfg.get(f"{name}_version")],
        ("kernel sizes", ", ".join(f"{h}x{w}" for h, w in bank.kernel_sizes)),
        ("format version", str(cfg.get("format_version"))),
    ]
    source_table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in source_rows)])
    # the snippet injects into a fresh model of the source architecture where one can be named: a timm name or a
    # torchvision builder; a bank of any other model goes into a timm model by depth
    builder = cfg.get("source_builder") if library == "torchvision" and example_model is None else None
    timm_source = library in (None, "timm") and source_model != "unknown"
    same_shapes = example_model is None and timm_source
    example_model = example_model or (source_model if timm_source else "convnext_atto")
    usage = usage or (_TORCHVISION_USAGE.format(repo_id=repo_id, builder=builder) if builder else "") or _USAGE.format(
        repo_id=repo_id, example_model=example_model, extra_kwargs="" if same_shapes else ', mapping="depth"'
    )
    return render_card(
        card_data,
        title=title or f"Master-key depthwise filters of {source_model}",
        summary=summary or cfg.get("description") or f"The depthwise convolution kernels of `{source_model}`, "
        "packaged as a masterkey filter bank: frozen, they serve as general-purpose spatial filters for another "
        "dataset (the Master Key Filters Hypothesis).",
        sections=[
            ("Where the filters come from", f"{source_table}\n\n{_layer_summary(bank)}"),
            ("How to use", usage),
            ("Results", results_text or (results_table(results) if results else "")),
            *sections,
        ],
        credits=credits,
        footer=f"Built with [masterkey](https://github.com/masterkey-filters/masterkey) ({LIBRARY_NAME}).",
    )


def _license_id(text: str | None) -> str | None:
    """The Hub licence identifier for a free-text licence when it is a known one (``Apache-2.0`` -> ``apache-2.0``)."""
    if not text:
        return None
    known = {"apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "cc-by-nc-4.0", "other"}
    ident = text.strip().lower().split()[0]
    return ident if ident in known else "other"
