"""Loading banks (Hub ids, local folders, built-in names) and uploading folders to the Hugging Face Hub.

Every download goes through ``FilterBank.from_pretrained`` (``hf_hub_download``, its cache and ``HF_HUB_OFFLINE``);
every upload through :func:`push_folder` (``HfApi`` with ``library_name="masterkey"``).
"""

from __future__ import annotations

import logging
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import HfApi

from .bank import FilterBank
from .constants import LIBRARY_NAME, LIBRARY_VERSION
from .keys import universal_bank
from .sources import imagenet_lite0_bank

__all__ = ["load_master_filters", "push_folder", "BUILTIN_BANKS"]

_logger = logging.getLogger(__name__)

#: Banks masterkey builds itself, without any download: name -> a function that builds it. The universal keys are
#: one entry shaped ``(8, 1, k, k)``, named as their Hub folders are (``universal-learned-8``): use them with
#: ``fit_universal`` / ``inject_universal``.
BUILTIN_BANKS: dict[str, Callable[[], FilterBank]] = {
    "imagenet-lite0": imagenet_lite0_bank,
    "universal-learned-8": functools.partial(universal_bank, "learned"),
    "universal-idealized-8": functools.partial(universal_bank, "idealized"),
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
    names of :data:`BUILTIN_BANKS` (``"imagenet-lite0"``, ``"universal-learned-8"``, ``"universal-idealized-8"``) are
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
        return BUILTIN_BANKS[name]()
    return FilterBank.from_pretrained(
        repo_id_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Create the Hub model repo ``repo_id`` if needed and upload ``folder`` to it (files matching
    ``ignore_patterns`` left out); returns the repo's URL. The one upload path of masterkey: banks and trained models.

    Example:
        >>> push_folder("hub_cards/tf_efficientnet_lite0-imagenet-dw", "org/lite0-imagenet-dw")
        'https://huggingface.co/org/lite0-imagenet-dw'
    """
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=LIBRARY_VERSION)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    _logger.info("Uploading %s to %s", folder, url)
    api.upload_folder(
        repo_id=url.repo_id,
        folder_path=str(folder),
        commit_message=commit_message or f"Upload {Path(folder).name} with masterkey",
        ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
    )
    return str(url)
