"""Loading and publishing filter banks through the Hugging Face Hub."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bank import FilterBank
from .constants import CARD_NAME, HUB_ORG

__all__ = ["load_master_filters", "publish_bank", "write_hub_cards", "BUILTIN_BANKS"]

#: Banks masterkey builds itself, without any download: name -> (module, function, keyword arguments).
BUILTIN_BANKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "imagenet-lite0": ("masterkey.sources", "imagenet_lite0_bank", {}),
    "universal-learned": ("masterkey.universal", "universal_bank", {"kind": "learned"}),
    "universal-idealized": ("masterkey.universal", "universal_bank", {"kind": "idealized"}),
}


def load_master_filters(
    repo_id_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
) -> FilterBank:
    """Load a master-key filter bank from a Hub repo id, a local folder, or a built-in name.

    Hub downloads go through ``huggingface_hub`` (``hf_hub_download``, its cache and ``HF_HUB_OFFLINE``), so a bank
    downloaded once loads offline afterwards. Only ``filters.safetensors`` and ``config.json`` are read. The built-in
    names of :data:`BUILTIN_BANKS` (``"imagenet-lite0"``, ``"universal-learned"``, ``"universal-idealized"``) are
    built locally; an existing local folder of the same name wins.

    Raises:
        BankNotFoundError: not a folder, not on the Hub, or not cached while offline.
        BankFormatError: the files are there but malformed (truncated safetensors, bad config, unknown version).
        InvalidFiltersError: a kernel holds NaN or Inf.

    Example:
        >>> import masterkey
        >>> bank = masterkey.load_master_filters("org/convnext-imagenet-dw")
        >>> model = masterkey.from_pretrained_filters("convnext_tiny", bank)
    """
    name = str(repo_id_or_path)
    if name in BUILTIN_BANKS and not Path(name).exists():
        module, function, kwargs = BUILTIN_BANKS[name]
        return getattr(importlib.import_module(module), function)(**kwargs)
    return FilterBank.from_pretrained(
        repo_id_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )


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
        card_kwargs: more keyword arguments for :func:`masterkey.cards.bank_card` (``summary``, ``sections``, ...).

    Returns:
        ``(file name, size in bytes)`` of every file that is (or would be) uploaded.

    Example:
        >>> publish_bank(bank, "org/lite0-imagenet-dw", folder="hub_cards/lite0-imagenet-dw", dry_run=True)
    """
    folder = Path(folder)
    repo_id = repo_id or f"{HUB_ORG}/{folder.name}"
    (folder / CARD_NAME).unlink(missing_ok=True)  # the card is always regenerated from the bank and results
    bank.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id, "results": list(results), **(card_kwargs or {})})
    files = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
    if not dry_run:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload masterkey filter bank ({len(bank)} kernels)",
        )
    return files


def write_hub_cards(out_dir: str | Path, *, experiments_dir: str | Path | None = None) -> list[Path]:
    """Build the Hub folder (filters, config, card) of every bank masterkey publishes, with the experiments' results
    on the cards when ``experiments_dir`` holds them: the ImageNet ``tf_efficientnet_lite0`` bank, the learned and
    idealized universal keys, and the banks the transfer-matrix experiment trained on the built-in datasets.

    Example:
        >>> write_hub_cards("hub_cards", experiments_dir="outputs/experiments")  # or: masterkey cards --out hub_cards
    """
    import json

    from .analysis import explained_table
    from .cards import experiment_card_results
    from .universal import write_cards

    out_dir = Path(out_dir)

    def publish(bank: FilterBank, name: str, spec: str, sections: list[tuple[str, str]]) -> Path:
        results, experiment_sections = experiment_card_results(experiments_dir, spec) if experiments_dir else ([], [])
        publish_bank(bank, folder=out_dir / name, results=results,
                     card_kwargs={"sections": [*sections, *experiment_sections]}, dry_run=True)  # fmt: skip
        return out_dir / name

    lite0 = load_master_filters("imagenet-lite0")
    lite0_explained = explained_table(lite0)  # slow-ish (a fit and a chance baseline): computed once for two cards
    explained = ("What the 8 universal keys explain", lite0_explained)
    written = [publish(lite0, "tf_efficientnet_lite0-imagenet-dw", "imagenet-lite0", [explained])]
    written += write_cards(out_dir, experiments_dir=experiments_dir, lite0_explained=lite0_explained)
    matrix = Path(experiments_dir or "") / "transfer-matrix" / "results.json"
    if experiments_dir and matrix.is_file():
        data = json.loads(matrix.read_text())
        for dataset, folder in data["details"]["own_banks"].items():
            name = f"{data['model']}-{dataset}-dw"
            # the trained bank itself, or (on a clone without the training outputs) the folder published before
            bank = load_master_filters(folder if Path(folder).is_dir() else out_dir / name)
            written.append(publish(bank, name, folder, [("What the 8 universal keys explain", explained_table(bank))]))
    return written
