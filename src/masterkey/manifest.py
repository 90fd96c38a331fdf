"""A bank's manifest: :class:`KernelSpec` (one entry per depthwise kernel), :func:`make_config` (the ``config.json``
content) and the schema checks every manifest passes before use (types, ranges, sizes, nesting), whether it was built
in Python or read from an untrusted file. Every problem raises a :class:`~masterkey.errors.BankFormatError` that names
the entry and the field and says what to do.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .constants import CONFIG_NAME, FORMAT_VERSION, LIBRARY_NAME, LIBRARY_VERSION
from .errors import BankFormatError

__all__ = ["KernelSpec", "make_config", "SOURCE_FIELDS", "MAX_CONFIG_BYTES", "MAX_FILTERS_BYTES", "MAX_JSON_DEPTH", "MAX_KERNELS", "MAX_NAME_LENGTH", "MAX_INT"]


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


# values shown in error messages: short, and safe on any input (reprlib bounds length and nesting)
_short_repr = reprlib.Repr()


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
