"""Publishing banks on the Hub: the exact folder of a bank's Hub repo and its upload.

- :func:`publish_bank`: the folder of a bank's Hub repo (filters, config, card with results) and the upload;
- :func:`publish_checkpoint` / :data:`ZOO`: the bank of a pretrained checkpoint, and the zoo of every supported family;
- :func:`load_card_results`: a card results file (``EvalResult`` rows and Markdown sections) for a card.

The cards that carry the experiments' results (``masterkey cards``: :func:`masterkey.research.cards.write_hub_cards`,
the universal keys' cards) belong to the research wing, :mod:`masterkey.research.cards`; their old names here are
deprecated aliases.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from . import _libraries, _timm
from .bank import FilterBank
from .constants import (
    CARD_NAME,
    CONFIG_NAME,
    FILTERS_NAME,
    HUB_ORG,
)
from .errors import BankFormatError
from .extract import extract_filters
from .hub import check_upload, push_folder

__all__ = ["ZOO", "BANK_FILES", "zoo_repo_name", "publish_checkpoint", "publish_bank", "load_card_results"]

_logger = logging.getLogger(__name__)

#: A folder name made from names read from results files: one plain path component.
#: The files of a bank's Hub repo.
BANK_FILES = (CARD_NAME, CONFIG_NAME, FILTERS_NAME)


#: An ImageNet checkpoint of every supported DS-CNN family (one per family, small ones first): what
#: ``masterkey publish --zoo ORG`` publishes, each as ``ORG/<architecture>-<dataset>-dw`` (:func:`zoo_repo_name`).
ZOO = (
    "convnext_tiny.fb_in1k", "convnextv2_tiny.fcmae_ft_in1k", "efficientnet_b0.ra_in1k", "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k", "tf_efficientnetv2_b0.in1k", "mobilenetv2_100.ra_in1k",
    "mobilenetv3_large_100.ra_in1k", "mobilenetv4_conv_small.e2400_r224_in1k", "mixnet_s.ft_in1k", "ghostnet_100.in1k",
    "ghostnetv2_100.in1k", "ghostnetv3_100.in1k", "repghostnet_100.in1k", "repvit_m1.dist_in1k",
    "fastvit_t8.apple_in1k", "mobileone_s0.apple_in1k", "edgenext_small.usi_in1k", "inception_next_tiny.sail_in1k",
    "mnasnet_100.rmsp_in1k", "lcnet_100.ra2_in1k", "tinynet_a.in1k", "rexnet_100.nav_in1k", "starnet_s1.in1k",
    "mambaout_femto.in1k", "efficientvit_b0.r224_in1k", "mobilevit_s.cvnets_in1k", "tiny_vit_5m_224.in1k",
    "fbnetc_100.rmsp_in1k", "hardcorenas_a.miil_green_in1k", "hgnetv2_b0.ssld_stage2_ft_in1k",
)  # fmt: skip


_DATASET_SLUGS = {"imagenet-1k": "imagenet", "imagenet-22k": "imagenet22k", "imagenet-12k": "imagenet12k",
                  "imagenet-21k": "imagenet21k"}  # fmt: skip


def zoo_repo_name(checkpoint: str) -> str:
    """The Hub repo name of a checkpoint's bank: ``<architecture>-<dataset>-dw``, the dataset read from timm's tag
    (``convnext_tiny.fb_in22k_ft_in1k`` -> ``convnext_tiny-imagenet22k-ft-imagenet-dw``) or torchvision's weights
    (``torchvision:mobilenet_v2.IMAGENET1K_V1`` -> ``mobilenet_v2-imagenet-dw``); ``<name>-dw`` where neither names one
    (a transformers repo: its name; a torchvision builder with a weights file: the builder).

    Example:
        >>> zoo_repo_name("convnext_tiny.fb_in1k")
        'convnext_tiny-imagenet-dw'
    """
    if checkpoint.startswith(_libraries.TORCHVISION_PREFIX):
        builder, _, weights = checkpoint.removeprefix(_libraries.TORCHVISION_PREFIX).partition(".")
        return f"{builder}-imagenet-dw" if weights.upper().startswith("IMAGENET1K") else f"{builder}-dw"
    name = checkpoint.removeprefix(_libraries.TRANSFORMERS_PREFIX).removeprefix(_timm.HUB_PREFIX)
    name = name.split("@")[0].rstrip("/").split("/")[-1]
    architecture, tag = _timm.split_model_name_tag(name)
    dataset = _timm.dataset_of_tag(tag)
    if dataset is None:
        return f"{architecture}{'-' + tag if tag else ''}-dw"
    parts = [_DATASET_SLUGS.get(d.strip(), d.strip()) for d in dataset.split(", fine-tuned on ")]
    return f"{architecture}-{'-ft-'.join(parts)}-dw"


def publish_checkpoint(
    checkpoint: str,
    repo_id: str | None = None,
    *,
    folder: str | Path,
    dry_run: bool = False,
    private: bool | None = None,
    token: str | None = None,
) -> tuple[str, list[tuple[str, int]]]:
    """From a pretrained checkpoint to its bank on the Hub in one call: check the target (unless ``dry_run``),
    extract the bank (:func:`masterkey.extract_filters`, weights through timm's Hub loading, provenance recorded),
    write its folder with the card, and upload it. Returns the repo id and the files.

    Example:
        >>> publish_checkpoint("convnext_tiny.fb_in1k", "org/convnext_tiny-imagenet-dw", folder="banks/convnext")
    """
    repo_id = repo_id or f"{HUB_ORG}/{zoo_repo_name(checkpoint)}"
    if not dry_run:
        check_upload(repo_id, token=token)  # before the download and the extraction
    bank = extract_filters(checkpoint)
    files = publish_bank(bank, repo_id, folder=folder, dry_run=dry_run, private=private, token=token)
    return repo_id, files


def publish_bank(
    bank: FilterBank,
    repo_id: str | None = None,
    *,
    folder: str | Path,
    results: Sequence[Any] = (),
    card_kwargs: dict[str, Any] | None = None,
    dry_run: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> list[tuple[str, int]]:
    """Write the exact folder a bank's Hub repo holds (``filters.safetensors``, ``config.json``, ``README.md``) and,
    unless ``dry_run``, upload it with ``huggingface_hub``.

    Args:
        repo_id: target repo; defaults to ``{MASTERKEY_HUB_ORG}/{folder name}``.
        results: ``huggingface_hub.EvalResult`` rows for the card's ``model-index`` metadata and results table.
        card_kwargs: more keyword arguments for :func:`masterkey.bank.bank_card` (``summary``, ``sections``, ...).

    Returns:
        ``(file name, size in bytes)`` of every file that is (or would be) uploaded.

    Example:
        >>> publish_bank(bank, "org/lite0-imagenet-dw", folder="hub_cards/lite0-imagenet-dw", dry_run=True)
    """
    folder = Path(folder)
    repo_id = repo_id or f"{HUB_ORG}/{folder.name}"
    if not dry_run:
        check_upload(repo_id, token=token)  # before any work: offline, no token, a bad repo id
    bank.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id, "results": list(results), **(card_kwargs or {})})
    # only the bank's own files travel: anything else a user keeps in the folder is neither listed nor uploaded
    files = sorted((name, (folder / name).stat().st_size) for name in BANK_FILES)
    _logger.info("Wrote the Hub folder of %r to %s", bank, folder)
    if not dry_run:
        push_folder(folder, repo_id, token=token, private=private, allow_patterns=BANK_FILES,
                    commit_message=commit_message or f"Upload masterkey filter bank ({len(bank)} kernels)")  # fmt: skip
    return files


def load_card_results(path: str | Path) -> tuple[list[EvalResult], list[tuple[str, str]]]:
    """Read a card results file: ``{"results": [EvalResult fields...], "sections": [{"title", "body"}...]}``.

    Each result row holds ``huggingface_hub.EvalResult`` keyword arguments (``task_type``, ``dataset_type``,
    ``dataset_name``, ``metric_type``, ``metric_value``, and optionally ``source_name``, ``dataset_split``, ...);
    sections are extra Markdown sections (tables, plots, the commands that reproduce them).

    Example:
        >>> results, sections = load_card_results("outputs/experiments/card_results.json")
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        results = [EvalResult(**row) for row in data.get("results", [])]
        sections = [(s["title"], s["body"]) for s in data.get("sections", [])]
    except (OSError, json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise BankFormatError(
            f"Cannot read card results from {path}: {e!r}. Expected JSON with 'results' (EvalResult fields) and "
            "optional 'sections' ({'title', 'body'})."
        ) from None
    return results, sections


#: Names that moved to :mod:`masterkey.research.cards`, still reachable here (deprecated).
_MOVED_TO_RESEARCH = ("write_hub_cards", "write_universal_cards", "experiment_card_results", "CardResults",
                      "one_per_dataset")  # fmt: skip


def __getattr__(name: str) -> Any:
    # A deprecated alias: the core never imports the research wing at import time; only an old caller's attribute
    # access reaches it, with a warning.
    if name in _MOVED_TO_RESEARCH:
        warnings.warn(f"masterkey.publishing.{name} moved to masterkey.research.cards.{name}; import it from there.",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return getattr(importlib.import_module("masterkey.research.cards"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
