"""The filter bank: the depthwise kernels of one model plus a manifest, as a Hub artifact.

On disk (a local folder or a Hub model repo) a bank is three files:

- ``filters.safetensors``: one float32 tensor per depthwise conv, keyed by the conv's module path, shaped exactly
  like that conv's weight, ``(out_channels, 1, kh, kw)``;
- ``config.json``: format version, ``library_name``, where the filters came from, and one manifest entry per kernel
  (see :class:`KernelSpec`);
- ``README.md``: the model card.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .constants import CONFIG_NAME, FILTERS_NAME, FORMAT_VERSION, LIBRARY_NAME, PAPER_MASTER_KEY
from .errors import BankFormatError, BankNotFoundError, InvalidFiltersError

__all__ = ["FilterBank", "KernelSpec"]

# Source fields a bank's config may carry (all optional); anything else passed as source info is kept under "extra".
SOURCE_FIELDS = ("source_model", "source_weights", "source_dataset", "source_license", "description")


@dataclass(frozen=True)
class KernelSpec:
    """Manifest entry of one depthwise kernel.

    ``index`` and ``relative_depth`` (``index / (n - 1)``, 0 for the first conv and 1 for the last) place the conv
    among all depthwise convs of its model in forward order; ``stage`` is the index of the top-level block container
    holding it (the first integer in its module path, e.g. ``stages.2.blocks.0.conv_dw`` -> 2) or ``None``.
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
    def from_dict(cls, d: Mapping[str, Any]) -> KernelSpec:
        try:
            return cls(
                name=str(d["name"]),
                in_channels=int(d["in_channels"]),
                out_channels=int(d["out_channels"]),
                kernel_size=_pair(d["kernel_size"]),
                stride=_pair(d.get("stride", 1)),
                dilation=_pair(d.get("dilation", 1)),
                index=int(d.get("index", 0)),
                relative_depth=float(d.get("relative_depth", 0.0)),
                stage=None if d.get("stage") is None else int(d["stage"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BankFormatError(
                f"Malformed manifest entry {dict(d)!r} in {CONFIG_NAME}: {e!r}. Each entry needs at least 'name', "
                "'in_channels', 'out_channels' and 'kernel_size'; rebuild the bank with masterkey.extract_filters."
            ) from None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected 2 values, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def relative_depths(n: int) -> list[float]:
    """Relative depth of each of ``n`` convs in forward order: evenly spaced from 0 to 1."""
    return [0.0] * n if n == 1 else [i / (n - 1) for i in range(n)]


class FilterBank(
    ModelHubMixin,
    library_name=LIBRARY_NAME,
    tags=["masterkey", "depthwise-filters", "filter-bank"],
    paper_url=PAPER_MASTER_KEY,
):
    """The depthwise kernels of one model plus a manifest, saved as safetensors.

    Build one with :func:`masterkey.extract_filters`, load one with :func:`masterkey.load_master_filters` or
    ``FilterBank.from_pretrained``, save it with ``save_pretrained`` and publish it with ``push_to_hub``.

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))
        >>> bank.names[0], tuple(bank[bank.names[0]].shape)
        ('blocks.0.0.conv_dw', (16, 1, 3, 3))
        >>> bank.save_pretrained("my-bank")  # filters.safetensors, config.json, README.md
    """

    def __init__(self, filters: Mapping[str, torch.Tensor], config: Mapping[str, Any]):
        specs = [KernelSpec.from_dict(entry) for entry in config.get("filters", [])]
        self._specs = {spec.name: spec for spec in sorted(specs, key=lambda s: s.index)}
        self._filters = {name: filters[name].detach().to("cpu", torch.float32).contiguous() for name in filters}
        self._config = {k: v for k, v in config.items() if k != "filters"}
        self._config.setdefault("format_version", FORMAT_VERSION)
        self._config.setdefault("library_name", LIBRARY_NAME)
        _validate(self._filters, self._specs, origin="the given filters")

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls, filters: Mapping[str, torch.Tensor], *, specs: list[KernelSpec] | None = None, **source_info: Any
    ) -> FilterBank:
        """Build a bank from kernels shaped ``(out_channels, 1, kh, kw)`` (or ``(n, kh, kw)``), in the given order.

        Without ``specs`` each kernel gets a plain manifest entry (multiplier 1, stride 1, relative depth from its
        position). ``source_info`` (``source_model``, ``source_weights``, ``source_dataset``, ``source_license``,
        ``description``, or anything else) is written to ``config.json``.

        Example:
            >>> bank = FilterBank.from_tensors({"layer0": torch.randn(8, 1, 3, 3)}, source_dataset="noise")
            >>> bank.spec("layer0").kernel_size
            (3, 3)
        """
        tensors = {name: t if t.dim() == 4 else t.reshape(t.shape[0], 1, *t.shape[-2:]) for name, t in filters.items()}
        if specs is None:
            depths = relative_depths(len(tensors))
            specs = [
                KernelSpec(
                    name=name,
                    in_channels=t.shape[0],
                    out_channels=t.shape[0],
                    kernel_size=(t.shape[2], t.shape[3]),
                    index=i,
                    relative_depth=depths[i],
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

    # -- Hub serialization (ModelHubMixin hooks) ---------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_file(dict(self.items()), str(save_directory / FILTERS_NAME), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        from .cards import bank_card  # cards pull in templating only when a card is written

        return bank_card(self, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> FilterBank:
        """Load a bank from a local folder or a Hub repo id (cached by ``huggingface_hub``; works offline with
        ``HF_HUB_OFFLINE=1`` once cached). Only safetensors are read: nothing is ever unpickled.

        Keyword arguments: ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``.

        Example:
            >>> bank = FilterBank.from_pretrained("my-bank")
        """
        source = str(pretrained_model_name_or_path)
        if Path(source).exists() and not Path(source).is_dir():
            raise BankNotFoundError(
                f"{source!r} is a file; a bank is a folder holding {FILTERS_NAME} and {CONFIG_NAME} (or a Hub repo id)."
            )
        if Path(source).is_dir() and (Path(source) / CONFIG_NAME).is_file():
            _check_config(_read_config(Path(source) / CONFIG_NAME), origin=source)  # typed errors before the mixin reads it
        try:
            return super().from_pretrained(source, **kwargs)
        except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as e:
            raise _not_found(source, kwargs, e) from None
        except (json.JSONDecodeError, AttributeError) as e:
            raise BankFormatError(f"The {CONFIG_NAME} of {source!r} is malformed ({e}); it is not a masterkey bank.") from None

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
        local = Path(model_id).is_dir()

        def fetch(filename: str) -> Path:
            if local:
                path = Path(model_id) / filename
                if not path.is_file():
                    raise BankFormatError(f"{model_id!r} has no {filename}: it is not a masterkey filter bank.")
                return path
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
                        library_version=__version__,
                    )
                )
            except EntryNotFoundError:
                raise BankFormatError(f"The Hub repo {model_id!r} has no {filename}: it is not a masterkey bank.") from None

        if config is None:
            # ModelHubMixin swallows Hub errors on config.json; fetching it again surfaces the real cause
            config = _read_config(fetch(CONFIG_NAME))
        return cls(_read_filters(fetch(FILTERS_NAME)), _check_config(config, origin=model_id))


def make_config(specs: list[KernelSpec], **source_info: Any) -> dict[str, Any]:
    """``config.json`` content for ``specs``; source fields go to the top level, other keys under ``extra``."""
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


def _check_config(config: Any, *, origin: str) -> dict[str, Any]:
    if not isinstance(config, dict) or "filters" not in config:
        raise BankFormatError(
            f"{CONFIG_NAME} of {origin!r} is not a masterkey bank config (no 'filters' manifest). "
            "Rebuild it with masterkey.extract_filters(...).save_pretrained(...)."
        )
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise BankFormatError(
            f"{origin!r} uses filter-bank format version {version!r}; this masterkey ({__version__}) reads versions "
            f"1 to {FORMAT_VERSION}. Upgrade masterkey (pip install -U masterkey)."
        )
    return config


def _read_config(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BankFormatError(f"{path} is not valid JSON ({e}); save or download the bank again.") from None


def _read_filters(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise BankFormatError(
            f"Cannot read {path}: {e}. The file is truncated or not safetensors; download or save the bank again."
        ) from None


def _validate(filters: Mapping[str, torch.Tensor], specs: Mapping[str, KernelSpec], *, origin: str) -> None:
    """Tensors and manifest must describe the same kernels, with finite values."""
    if not specs:
        raise BankFormatError(f"The manifest of {origin} lists no kernels; a bank holds at least one.")
    missing = [n for n in specs if n not in filters]
    extra = [n for n in filters if n not in specs]
    if missing or extra:
        raise BankFormatError(
            f"The tensors and the manifest of {origin} disagree: in the manifest only {missing}, in the tensors only "
            f"{extra}. Rebuild the bank with masterkey.extract_filters."
        )
    wrong = {n: (tuple(filters[n].shape), s.shape) for n, s in specs.items() if tuple(filters[n].shape) != s.shape}
    if wrong:
        details = "; ".join(f"{n}: tensor {got}, manifest {want}" for n, (got, want) in wrong.items())
        raise BankFormatError(f"Tensor shapes disagree with the manifest of {origin}: {details}.")
    if torch.isfinite(torch.cat([t.reshape(-1) for t in filters.values()])).all():
        return  # one pass over all values; per-kernel only to name the culprits
    bad = [n for n, t in filters.items() if not torch.isfinite(t).all()]
    if bad:
        raise InvalidFiltersError(
            f"{len(bad)} kernel(s) of {origin} hold NaN or Inf values: {bad[:10]}"
            f"{' ...' if len(bad) > 10 else ''}. Re-extract them from a model with finite weights."
        )


def _not_found(source: str, kwargs: Mapping[str, Any], error: Exception) -> BankNotFoundError:
    from huggingface_hub import constants as hf_constants

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

