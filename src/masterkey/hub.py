"""Loading (and publishing) filter banks through the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from .bank import FilterBank

__all__ = ["load_master_filters"]


def load_master_filters(
    repo_id_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
) -> FilterBank:
    """Load a master-key filter bank from a Hub repo id or a local folder.

    Hub downloads go through ``huggingface_hub`` (``hf_hub_download``, its cache and ``HF_HUB_OFFLINE``), so a bank
    downloaded once loads offline afterwards. Only ``filters.safetensors`` and ``config.json`` are read.

    Raises:
        BankNotFoundError: not a folder, not on the Hub, or not cached while offline.
        BankFormatError: the files are there but malformed (truncated safetensors, bad config, unknown version).
        InvalidFiltersError: a kernel holds NaN or Inf.

    Example:
        >>> import masterkey
        >>> bank = masterkey.load_master_filters("org/convnext-imagenet-dw")
        >>> model = masterkey.from_pretrained_filters("convnext_tiny", bank)
    """
    return FilterBank.from_pretrained(
        repo_id_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )
