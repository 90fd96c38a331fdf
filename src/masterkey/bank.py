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

This module holds :class:`FilterBank` and the checked reading of bank files; the manifest and its schema checks are
in :mod:`masterkey.manifest`, the positions of convs in :mod:`masterkey.positions`, atomic saves in
:mod:`masterkey._atomic` and the card in :mod:`masterkey.bank_card`. Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ._atomic import _PENDING_NAME, _write_bank_folder
from .bank_card import bank_card
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
from .manifest import (
    _GIVEN_CONFIG,
    MAX_CONFIG_BYTES,
    MAX_FILTERS_BYTES,
    MAX_JSON_DEPTH,
    MAX_KERNELS,
    MAX_NAME_LENGTH,
    KernelSpec,
    _check_config,
    _short_repr,
    _shown,
    make_config,
)
from .positions import (
    layer_positions,
    relative_depths,
    scale_positions,
    stage_index,
    stage_path,
)

__all__ = [
    "FilterBank",
    "KernelSpec",
    "bank_card",
    "layer_positions",
    "make_config",
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

#: Kernel dtypes a bank may store; they are read as float32.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


_FLOAT_DTYPE_NAMES = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)


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
        """The bank's Hub model card (:func:`masterkey.bank_card.bank_card`'s keyword arguments: ``repo_id``,
        ``title``, ``summary``, ``results``, ...), which ``save_pretrained`` and ``push_to_hub`` write as README.md.

        Example:
            >>> import masterkey
            >>> card = masterkey.load_master_filters("imagenet-lite0").generate_model_card()
            >>> card.data.license, card.data.library_name
            ('apache-2.0', 'masterkey')
        """
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
