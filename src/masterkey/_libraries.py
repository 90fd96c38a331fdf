"""Private helpers for models built by libraries other than timm, each loaded with its own library's code, and where
any model's weights came from.

- ``torchvision:<builder>`` (``torchvision:mobilenet_v2``): ``torchvision.models.get_model_builder(builder)()``, then
  a local checkpoint loaded strictly and weights-only, torchvision's own pretrained weights
  (``torchvision:mobilenet_v2.IMAGENET1K_V1``, or the builder's ``DEFAULT`` weights with ``pretrained=True``) from
  torch's hub cache, or its random initialisation for baselines;
- ``transformers:<org>/<name>[@revision]`` or ``transformers:<folder>``: ``transformers.AutoModelForImageClassification
  .from_pretrained`` (the Hugging Face cache, ``HF_HUB_OFFLINE``), the commit it resolved recorded;
- :func:`module_provenance`: the library and class of any ``nn.Module``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from huggingface_hub import ModelCard, hf_hub_download, try_to_load_from_cache
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, HfHubHTTPError
from huggingface_hub.utils import validate_repo_id
from torch import nn
from torchvision import models as tv_models

from . import _timm
from .errors import ArgumentError, CheckpointError, UnsupportedModelError

#: The prefix of a model name that is a torchvision model builder (``torchvision:mobilenet_v2``).
TORCHVISION_PREFIX = "torchvision:"
#: The prefix of a model name that is a transformers image model: a Hub id (``transformers:facebook/convnext-tiny-224``,
#: ``@revision`` allowed) or a folder written by ``save_pretrained``.
TRANSFORMERS_PREFIX = "transformers:"
#: Libraries whose version a bank records (as ``<library>_version``) when its model came from them.
VERSIONED_LIBRARIES = ("timm", "torchvision", "transformers")
#: What the licence of torchvision's own published weights is taken to be: torchvision's (the dataset's terms apply
#: besides; torchvision asks users to check them).
TORCHVISION_LICENSE = "BSD-3-Clause"
#: Dataset words in torchvision's weights names, as the Hub names the datasets.
_WEIGHTS_DATASETS = {"IMAGENET1K": "imagenet-1k", "IMAGENET22K": "imagenet-22k"}


@dataclass(frozen=True)
class Loaded:
    """A model built by another library, and where its weights came from (``config.json`` fields of its bank)."""

    model: nn.Module
    provenance: dict[str, Any]


def is_library_name(name: str) -> bool:
    """Whether a model name names a torchvision builder or a transformers model (rather than a timm model)."""
    return name.startswith((TORCHVISION_PREFIX, TRANSFORMERS_PREFIX))


def library_of(model: nn.Module) -> str:
    """The library a model's class comes from: the top-level package of its module (``torchvision``, ``timm``,
    ``transformers``, ``torch`` for ``nn.Sequential``, your own package), or ``"user"`` for a class defined in a script
    (``__main__``) or of unknown origin.

    Example:
        >>> library_of(torchvision.models.mobilenet_v2())
        'torchvision'
    """
    top = (getattr(type(model), "__module__", None) or "").split(".")[0]
    return "user" if top in ("", "__main__", "builtins") else top


def module_provenance(model: nn.Module) -> dict[str, Any]:
    """``source_library``, ``source_class`` (the qualified class name) and, for timm, torchvision and transformers,
    the library's version (``timm_version``, ...) of any ``nn.Module``.

    Example:
        >>> module_provenance(torchvision.models.mobilenet_v2())["source_class"]
        'torchvision.models.mobilenetv2.MobileNetV2'
    """
    cls = type(model)
    library = library_of(model)
    info: dict[str, Any] = {"source_library": library, "source_class": f"{cls.__module__}.{cls.__qualname__}"}
    if library in VERSIONED_LIBRARIES:  # imported already: the model's class comes from it
        version = getattr(sys.modules.get(library), "__version__", None)
        try:
            info[f"{library}_version"] = version or importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path: no version to record
            pass
    return info


def load(
    name: str, *, weights: str | Path | None = None, pretrained: bool | None = None, **model_kwargs: Any
) -> Loaded:
    """Build the model a ``torchvision:`` or ``transformers:`` name names, with the weights asked for, and say where
    they came from.

    Raises:
        ArgumentError: no weights named for a torchvision architecture, or options its library does not take.
        UnsupportedModelError: an unknown builder (close matches listed), not an image classification model.
        CheckpointError: weights that cannot be read, do not fit (the first mismatch named) or cannot be had.
    """
    if name.startswith(TORCHVISION_PREFIX):
        return _load_torchvision(name.removeprefix(TORCHVISION_PREFIX), weights=weights, pretrained=pretrained,
                                 **model_kwargs)  # fmt: skip
    if weights is not None or pretrained is False:
        raise ArgumentError(
            f"{name!r} names a transformers model with its own weights (on the Hub or in a folder); it is loaded with "
            "them: drop weights= and pretrained=. For another checkpoint of the same architecture, save it with "
            "save_pretrained and name that folder."
        )
    return _load_transformers(name.removeprefix(TRANSFORMERS_PREFIX), **model_kwargs)


# -- torchvision --------------------------------------------------------------------------------------------------
def torchvision_builder(builder: str) -> Any:
    """``torchvision.models.get_model_builder(builder)``, or :class:`UnsupportedModelError` listing close matches."""
    try:
        return tv_models.get_model_builder(builder)
    except ValueError:
        close = difflib.get_close_matches(builder.lower(), tv_models.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See torchvision.models.list_models()."
        raise UnsupportedModelError(f"torchvision has no model builder named {builder!r}.{hint}") from None


def create_torchvision(builder: str, *, weights: str | Path | None = None, **model_kwargs: Any) -> nn.Module:
    """``torchvision.models.<builder>(weights=None, **model_kwargs)``, then the local checkpoint ``weights`` loaded
    into it strictly (:func:`load_strict`).

    Example:
        >>> model = create_torchvision("mobilenet_v2", weights="mobilenet_v2-b0353104.pth")
    """
    build = torchvision_builder(builder)
    try:
        model = build(weights=None, **model_kwargs)
    except (TypeError, ValueError) as e:
        raise UnsupportedModelError(f"torchvision.models.{builder}(**{model_kwargs}) failed: {e}") from None
    if weights is not None:
        load_strict(model, weights, what=f"torchvision's {builder}")
    return model


def load_strict(model: nn.Module, weights: str | Path, *, what: str) -> None:
    """Load a local checkpoint (safetensors, or a torch file read with ``weights_only=True``) into ``model``, every key
    and shape as the model has it.

    Raises:
        CheckpointError: the file cannot be read (truncated, pickled objects), or it does not fit: the first missing
            key, the first unexpected key and the first shape that differs are named, with their counts.
    """
    path = Path(weights)
    state = _timm.read_checkpoint(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and state[k].shape != v.shape]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) of the model missing from it, the first {missing[0]!r}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) the model does not have, the first {unexpected[0]!r}")
    if shapes:
        key, got, want = shapes[0]
        problems.append(f"{len(shapes)} shape(s) that differ, the first {key!r}: {got} in the checkpoint, {want} in "
                        "the model")  # fmt: skip
    if problems:
        raise CheckpointError(
            f"The checkpoint {str(path)!r} does not fit {what}: {'; '.join(problems)}. Name the builder the weights "
            "were trained with, and its arguments (num_classes, ...)."
        )
    model.load_state_dict(state, strict=True)


def _load_torchvision(
    name: str, *, weights: str | Path | None, pretrained: bool | None, **model_kwargs: Any
) -> Loaded:
    builder, _, tag = name.partition(".")
    torchvision_builder(builder)  # an unknown builder first: the likelier mistake
    if tag or pretrained:
        if weights is not None:
            raise ArgumentError("Pass either torchvision's pretrained weights or weights=PATH, not both.")
        if pretrained is False:
            raise ArgumentError(f"{name!r} names torchvision's pretrained weights {tag!r}; drop pretrained=False.")
        return _torchvision_pretrained(builder, tag, **model_kwargs)
    if weights is None and pretrained is None:
        raise ArgumentError(
            f"torchvision:{builder} names an architecture, not weights. Pass weights=PATH (a checkpoint of "
            f"torchvision.models.{builder}), pretrained=True or a tag (torchvision:{builder}.IMAGENET1K_V1) for "
            "torchvision's own weights, or pretrained=False for randomly initialised kernels (baselines only)."
        )
    model = create_torchvision(builder, weights=weights, **model_kwargs)
    info: dict[str, Any] = {"source_model": builder, "source_builder": builder, **module_provenance(model)}
    if weights is None:
        info["source_weights"] = "randomly initialised (torchvision's init), for baselines"
        info["description"] = (
            f"Randomly initialised depthwise kernels of torchvision's `{builder}` (no training): a baseline to "
            "compare master-key filters with, not master-key filters themselves."
        )
    else:
        digest = _timm.sha256_file(weights)
        info.update(source_weights=f"{Path(weights).name} (sha256 {digest[:16]})", source_sha256=digest)
    return Loaded(model, info)


def _torchvision_pretrained(builder: str, tag: str, **model_kwargs: Any) -> Loaded:
    """torchvision's own weights ``tag`` (its ``DEFAULT`` without one) of ``builder``, from torch's hub cache
    (``$TORCH_HOME/hub/checkpoints``), downloaded there by torch's own code when missing and the Hub is not offline."""
    try:
        enum = tv_models.get_model_weights(builder)
    except ValueError:
        raise UnsupportedModelError(
            f"torchvision publishes no pretrained weights for {builder}; pass weights=PATH."
        ) from None
    try:
        chosen = enum[tag] if tag else enum.DEFAULT
    except KeyError:
        raise UnsupportedModelError(
            f"torchvision has no weights {tag!r} for {builder}; its weights: {', '.join(w.name for w in enum)}."
        ) from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(chosen.url).path)
    if not file.is_file():
        if hf_constants.is_offline_mode():
            raise CheckpointError(
                f"torchvision's {enum.__name__}.{chosen.name} weights are not in torch's hub cache ({file}) and "
                "downloads are off (HF_HUB_OFFLINE=1): download them once online, put the file there, or pass "
                "weights=PATH."
            )
        prefix = torch.hub.HASH_REGEX.search(file.name)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(chosen.url, str(file), prefix.group(1) if prefix else None, progress=False)
        except (URLError, OSError, RuntimeError) as e:
            raise CheckpointError(
                f"Cannot download torchvision's {enum.__name__}.{chosen.name} weights from {chosen.url}: {e}. Put the "
                f"file at {file}, or pass weights=PATH."
            ) from None
    digest = _timm.sha256_file(file)
    found = torch.hub.HASH_REGEX.search(file.name)
    if found and not digest.startswith(found.group(1)):
        raise CheckpointError(
            f"{file} is damaged or was replaced: its SHA-256 is {digest}, torchvision's {enum.__name__}.{chosen.name} "
            f"starts with {found.group(1)}. Delete it so that it is downloaded again, or pass weights=PATH."
        )
    model = create_torchvision(builder, weights=file, **model_kwargs)
    words = chosen.name.split("_")
    return Loaded(model, {
        "source_model": builder,
        "source_builder": builder,
        **module_provenance(model),
        "source_weights": f"torchvision {enum.__name__}.{chosen.name}, {chosen.url} (sha256 {digest[:16]})",
        "source_tag": chosen.name,
        "source_sha256": digest,
        "source_dataset": next((_WEIGHTS_DATASETS[w] for w in words if w in _WEIGHTS_DATASETS), None),
        "source_license": TORCHVISION_LICENSE,
    })  # fmt: skip


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the last ``nn.Linear`` of a torchvision classifier (``classifier[-1]``, ``fc``, ``head``) with a fresh
    one of ``num_classes`` outputs; returns the model.

    Example:
        >>> reset_classifier(torchvision.models.mobilenet_v2(), 10).classifier[1].out_features
        10
    """
    name = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    if name is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no nn.Linear classifier to replace.")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes))
    return model


# -- transformers -------------------------------------------------------------------------------------------------
def _load_transformers(ref: str, **model_kwargs: Any) -> Loaded:
    folder = Path(ref)
    local = folder.is_dir()
    repo, _, revision = (str(folder), "", "") if local else ref.partition("@")
    if not local:
        try:
            validate_repo_id(repo)
        except HFValidationError:
            raise UnsupportedModelError(
                f"transformers:{ref} is neither a folder nor a Hub id (org/name, optionally @revision)."
            ) from None
    elif not (folder / "config.json").is_file():
        raise UnsupportedModelError(
            f"{str(folder)!r} holds no config.json: name a folder written by a transformers model's save_pretrained."
        )
    try:
        import transformers  # the 'train' extra: transformers' own loading code, imported only when it is asked for
    except ImportError:
        raise UnsupportedModelError(
            "transformers models need the transformers package: pip install 'masterkey[train]' (or pip install "
            "transformers)."
        ) from None
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(repo, revision=revision or None,
                                                                             **model_kwargs)  # fmt: skip
    except ValueError as e:
        raise UnsupportedModelError(
            f"transformers builds no image classifier from {ref!r}: {_first_line(e)} masterkey extracts "
            "AutoModelForImageClassification models (ConvNeXt, ConvNeXt-V2, MobileNetV1/V2, EfficientNet, ...)."
        ) from None
    except (OSError, HfHubHTTPError, EntryNotFoundError) as e:
        offline = hf_constants.is_offline_mode()
        raise CheckpointError(
            f"Cannot load the transformers model {ref!r}: {_first_line(e)} "
            + ("It is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1): download it once online."
               if offline else "Check the Hub id and revision (or log in with `hf auth login` for a private repo).")
        ) from None
    model.eval()
    commit = None if local else _cached_commit(repo, revision or None)
    weights = _transformers_weights(folder if local else None, repo, commit)
    card = _card_data(folder if local else None, repo, commit)
    digest = _timm.sha256_file(weights) if weights else None
    where = f"{folder}" if local else f"{TRANSFORMERS_PREFIX}{repo}@{commit or revision or 'main'}"
    datasets = card.get("datasets") or []
    return Loaded(model, {
        "source_model": folder.resolve().name if local else repo.split("/")[-1],
        **module_provenance(model),
        "source_weights": where + (f" (sha256 {digest[:16]})" if digest else ""),
        "source_hub_id": None if local else repo,
        "source_revision": commit,
        "source_sha256": digest,
        "source_dataset": ", ".join(map(str, datasets if isinstance(datasets, list) else [datasets])) or None,
        "source_license": card.get("license") or None,
    })  # fmt: skip


_TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _cached_commit(repo: str, revision: str | None) -> str | None:
    """The commit ``from_pretrained`` resolved ``revision`` of ``repo`` to: the snapshot folder of the cached config
    (the cache maps a branch or tag to the commit it was last downloaded at)."""
    path = try_to_load_from_cache(repo, "config.json", revision=revision)
    parts = Path(path).parts if isinstance(path, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def _transformers_weights(folder: Path | None, repo: str, commit: str | None) -> Path | None:
    """The one weights file a transformers model was loaded from (a sharded model has several: none recorded)."""
    for filename in _TRANSFORMERS_WEIGHTS:
        path = (folder / filename) if folder else try_to_load_from_cache(repo, filename, revision=commit)
        if isinstance(path, (str, Path)) and Path(path).is_file():
            return Path(path)
    return None


def _card_data(folder: Path | None, repo: str, commit: str | None) -> dict[str, Any]:
    """The model card's metadata of a transformers model (its licence and datasets), or nothing where it has none or
    it cannot be had (offline and not cached)."""
    try:
        path = folder / "README.md" if folder else Path(hf_hub_download(repo, "README.md", revision=commit))
        return ModelCard.load(path).data.to_dict() if path.is_file() else {}
    except (OSError, HfHubHTTPError, EntryNotFoundError, ValueError):
        return {}


def _first_line(error: Exception) -> str:
    text = (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
    return f"{text}."
