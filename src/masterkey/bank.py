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
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .cards import render_card, results_table
from .constants import CONFIG_NAME, FILTERS_NAME, FORMAT_VERSION, LIBRARY_NAME, LIBRARY_VERSION, PAPER_MASTER_KEY
from .errors import BankFormatError, BankNotFoundError, InvalidFiltersError

__all__ = ["FilterBank", "KernelSpec", "bank_card", "layer_positions", "relative_depths", "stage_index", "stage_path"]

# Source fields a bank's config may carry (all optional); anything else passed as source info is kept under "extra".
SOURCE_FIELDS = ("source_model", "source_weights", "source_dataset", "source_license", "description")


@dataclass(frozen=True)
class KernelSpec:
    """Manifest entry of one depthwise kernel.

    ``index`` places the conv among the depthwise convs of its bank in forward order and ``relative_depth`` in
    ``(0, 1)`` is its depth counted in stages (:func:`layer_positions`, derived from the bank's module paths);
    ``stage`` is the first integer in its module path (``stages.2.blocks.0.conv_dw`` -> 2, :func:`stage_index`) or
    ``None``.
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


def _layer(name: str) -> str:
    # the splits of a MixedConv2d are children 0, 1, ... of one module: one layer
    head, _, last = name.rpartition(".")
    return head if head and last.isdigit() else name


def stage_path(name: str) -> str:
    """The stage a module path belongs to: the path up to its first integer (``stages.2.blocks.0.conv_dw`` ->
    ``stages.2``), or ``""`` when it has none."""
    parts = name.split(".")
    digits = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[: digits[0] + 1]) if digits else ""


def stage_index(name: str) -> int | None:
    """The stage number of a module path: its first integer (``stages.2.blocks.0.conv_dw`` -> 2), or ``None``."""
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
    stages = list(dict.fromkeys(stage_path(layer) for layer in layers))
    depth = {
        layer: (stages.index(stage_path(layer)) + within) / len(stages)
        for layer, within in zip(layers, _spread([stage_path(layer) for layer in layers]))
    }
    return {n: (depth[_layer(n)], split) for n, split in zip(names, _spread([_layer(n) for n in names]))}


def relative_depths(names: Sequence[str]) -> list[float]:
    """The relative depth (:func:`layer_positions`) of each of ``names``, in order."""
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

    Example:
        >>> import masterkey, timm
        >>> bank = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))
        >>> bank.names[0], tuple(bank[bank.names[0]].shape)
        ('blocks.0.0.conv_dw', (16, 1, 3, 3))
        >>> bank.save_pretrained("my-bank")  # filters.safetensors, config.json, README.md
    """

    def __init__(self, filters: Mapping[str, torch.Tensor], config: Mapping[str, Any]):
        specs = sorted((KernelSpec.from_dict(entry) for entry in config.get("filters", [])), key=lambda s: s.index)
        # relative depth is derived from the module paths (one definition everywhere), whatever a file says
        depths = relative_depths([spec.name for spec in specs])
        self._specs = {spec.name: replace(spec, relative_depth=d) for spec, d in zip(specs, depths)}
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

    # -- Hub serialization (ModelHubMixin hooks) ---------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        save_file(dict(self.items()), str(save_directory / FILTERS_NAME), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
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
                        library_version=LIBRARY_VERSION,
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
            f"{origin!r} uses filter-bank format version {version!r}; this masterkey ({LIBRARY_VERSION}) reads versions "
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
    credits: Sequence[str] = (),
) -> ModelCard:
    """The model card of a bank: metadata (``library_name: masterkey``, licence, tags, ``model-index`` eval results
    when given), where the filters came from, a layer summary, a runnable snippet (``usage`` replaces it), results
    and extra ``sections``, and credits. ``FilterBank.save_pretrained`` writes it; its keyword arguments come from
    ``save_pretrained(..., model_card_kwargs=...)``.

    Example:
        >>> card = bank_card(bank, repo_id="org/lite0-imagenet-dw")
        >>> card.save("README.md")
    """
    cfg = bank.config
    source_model = cfg.get("source_model") or "unknown"
    repo_id = repo_id or f"your-org/{source_model}-dw"
    results = list(results)
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=_license_id(cfg.get("source_license")),
        tags=["masterkey", "depthwise-filters", "filter-bank", "image-classification", "timm"],
        datasets=[cfg["source_dataset"]] if cfg.get("source_dataset") else None,
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )
    source_rows = [
        ("source architecture (timm)", f"`{source_model}`"),
        ("source weights", cfg.get("source_weights") or "not recorded"),
        ("training dataset", cfg.get("source_dataset") or "not recorded"),
        ("licence of the weights", cfg.get("source_license") or "not recorded"),
        ("kernel sizes", ", ".join(f"{h}x{w}" for h, w in bank.kernel_sizes)),
        ("format version", str(cfg.get("format_version"))),
    ]
    source_table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in source_rows)])
    same_shapes = example_model is None
    example_model = example_model or (source_model if source_model != "unknown" else "convnext_atto")
    usage = usage or _USAGE.format(
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
            ("Results", results_table(results) if results else ""),
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
