"""Saving and sharing a model that holds master-key filters, in timm's Hub layout.

:func:`save_model` writes ``model.safetensors`` and ``config.json`` as ``timm.models.save_for_hf`` does, adjusted so that
the folder loads both with ``timm.create_model("local-dir:<dir>", pretrained=True)`` (or ``hf-hub:<repo>`` once
pushed) and with transformers' ``pipeline("image-classification", model=<dir>)``: transformers' timm wrapper passes
``num_classes`` itself, so ``model_args`` must not hold it, and the label names and the evaluation preprocessing are in
the config. Weights are written in the ordinary (contiguous) memory layout whatever layout the model trained in. With a
card (:func:`model_card`), the folder also says which depthwise filters are frozen and where they came from, from
``model.masterkey_report``. :func:`push_model` uploads the same folder. The training loop saves its models with the
same function (and writes its own card, with results).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf
from torch import nn

from . import _timm
from .cards import render_card
from .constants import CARD_NAME
from .errors import ArgumentError
from .hub import push_folder

__all__ = ["save_model", "push_model", "model_card"]

_logger = logging.getLogger(__name__)

_FOOTER = "Saved with [masterkey](https://github.com/masterkey-filters/masterkey)."
_HOW_TO_USE = """With timm:

```python
import timm

model = timm.create_model("{timm_name}", pretrained=True).eval()
```

With transformers (its timm wrapper):

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{pipeline_name}")
classifier("image.png")
```"""


def how_to_use(*, timm_name: str, pipeline_name: str) -> str:
    """The card's snippet that loads a saved model with timm and with transformers.

    Example:
        >>> print(how_to_use(timm_name="local-dir:outputs/run", pipeline_name="outputs/run").splitlines()[5])
        model = timm.create_model("local-dir:outputs/run", pretrained=True).eval()
    """
    return _HOW_TO_USE.format(timm_name=timm_name, pipeline_name=pipeline_name)


def save_model(
    model: nn.Module,
    folder: str | Path,
    *,
    label_names: Sequence[str] | None = None,
    data_config: Mapping[str, Any] | None = None,
    card: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Save ``model`` in timm's Hub layout (``model.safetensors``, ``config.json``) and, with ``card``, a model card
    saying which depthwise filters are frozen and where they came from. ``data_config`` (timm's data config) defaults
    to the model's; ``label_names`` to ``class 0`` ... ``class K-1``. Returns the folder.

    Example:
        >>> model = masterkey.from_pretrained_filters("tf_efficientnet_lite0", "imagenet-lite0", num_classes=10)
        >>> masterkey.save_model(model, "my-model")
        >>> timm.create_model("local-dir:my-model", pretrained=True)  # the same weights, frozen filters included
    """
    folder = Path(folder)
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"save_model saves a torch nn.Module, not {type(model).__name__}.")
    num_classes = getattr(model, "num_classes", None)
    labels = list(label_names) if label_names is not None else [f"class {i}" for i in range(num_classes or 0)]
    data_config = dict(data_config or timm.data.resolve_model_data_config(model))
    folder.mkdir(parents=True, exist_ok=True)
    # the weights in the ordinary contiguous layout, whatever layout the model trained in (channels_last): what
    # timm's save_for_hf writes, which refuses non-contiguous tensors
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    path = folder / "config.json"
    save_config_for_hf(model, path, model_config={"label_names": labels})
    config = json.loads(path.read_text())
    config["label_names"] = labels
    # transformers' TimmWrapperForImageClassification calls timm.create_model(num_classes=..., **model_args)
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    if model_args:
        config["model_args"] = model_args
    else:
        config.pop("model_args", None)
    pretrained_cfg = config.setdefault("pretrained_cfg", {})
    for key in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std"):
        if key in data_config:
            value = data_config[key]
            pretrained_cfg[key] = list(value) if isinstance(value, (tuple, list)) else value
    pretrained_cfg["num_classes"] = len(labels)
    for key in ("tag", "hf_hub_id", "url", "license", "pool_size"):  # they describe timm's weights, not these
        pretrained_cfg.pop(key, None)
    path.write_text(json.dumps(config, indent=2) + "\n")
    if card:
        model_card(model, repo_id=repo_id, folder=folder).save(str(folder / CARD_NAME))
    _logger.info("Saved %s to %s", _timm.model_name(model) or type(model).__name__, folder)
    return folder


def push_model(
    model: nn.Module,
    repo_id: str,
    *,
    label_names: Sequence[str] | None = None,
    token: str | None = None,
    private: bool | None = None,
) -> str:
    """:func:`save_model` into a temporary folder, card included, then upload it to the Hub model repo ``repo_id``
    (checked first: offline, no token or a bad id stop it before anything is written); returns the repo's URL.

    Example:
        >>> masterkey.push_model(model, "your-org/lite0-animals-frozen")
    """
    with tempfile.TemporaryDirectory(prefix="masterkey-model-") as tmp:
        save_model(model, tmp, label_names=label_names, repo_id=repo_id)
        return push_folder(tmp, repo_id, token=token, private=private,
                           commit_message="Upload a model with master-key filters")  # fmt: skip


def model_card(model: nn.Module, *, repo_id: str | None = None, folder: str | Path | None = None) -> ModelCard:
    """The card of a model saved with :func:`save_model`: which depthwise convs hold which filters, frozen or not,
    and where they came from (``model.masterkey_report``); how to load it.

    Example:
        >>> model_card(model, repo_id="your-org/lite0-animals-frozen").save("README.md")
    """
    architecture = _timm.model_name(model) or type(model).__name__
    report = getattr(model, "masterkey_report", None)
    location = repo_id or f"./{Path(folder).name if folder else 'model'}"
    if report is None:
        filters = "No master-key filters were injected into this model (it has no `masterkey_report`)."
        title = f"{architecture}"
    else:
        state = "frozen" if report.frozen else "injected, trainable"
        filters = (
            f"{len(report.injected)} of {len(report.entries)} depthwise convolutions hold filters from "
            f"{report.bank} ({state}, mapping `{report.mapping}`, trainable policy `{report.trainable_policy}`).\n\n"
            f"```text\n{report.table()}\n{report.parameters}\n```"
        )
        title = f"{architecture} with master-key filters"
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["masterkey", "image-classification", "timm", "depthwise-filters"],
        model_name=location.split("/")[-1],
    )
    return render_card(
        card_data,
        title=title,
        summary=f"A `{architecture}` saved by masterkey in timm's Hub layout.",
        sections=[
            ("Depthwise filters", filters),
            ("How to use", how_to_use(timm_name=f"hf-hub:{repo_id}" if repo_id else f"local-dir:{location}",
                                      pipeline_name=location)),  # fmt: skip
        ],
        footer=_FOOTER,
    )
