"""Loading banks (Hub ids, local folders, built-in names) and uploading folders to the Hugging Face Hub.

Every download goes through ``FilterBank.from_pretrained`` (``hf_hub_download``, its cache and ``HF_HUB_OFFLINE``);
every upload through :func:`push_folder` (``HfApi`` with ``library_name="masterkey"``).
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .bank import FilterBank
from .constants import LIBRARY_NAME, LIBRARY_VERSION
from .errors import BankNotFoundError, HubError, UnknownNameError
from .keys import universal_bank
from .sources import IMAGENET_SOURCES, imagenet_bank

__all__ = ["load_master_filters", "push_folder", "check_upload", "BUILTIN_BANKS"]

_logger = logging.getLogger(__name__)

#: Banks masterkey builds itself, without any download: name -> a function that builds it. The universal keys are
#: one entry shaped ``(8, 1, k, k)``, named as their Hub folders are (``universal-learned-8``): use them with
#: ``fit_universal`` / ``inject_universal``.
BUILTIN_BANKS: dict[str, Callable[[], FilterBank]] = {
    **{source.bank_name: functools.partial(imagenet_bank, variant) for variant, source in IMAGENET_SOURCES.items()},
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
    names of :data:`BUILTIN_BANKS` (``"imagenet-lite0"``, ``"imagenet-lite1"``, ``"imagenet-lite2"``,
    ``"imagenet-mobilenetv2"``, ``"universal-learned-8"``, ``"universal-idealized-8"``) are built locally from
    packaged weights (checked against their SHA-256); an existing local folder of the same
    name wins.

    Raises:
        BankNotFoundError: not a folder, not on the Hub, or not cached while offline (an
            :class:`~masterkey.errors.UnknownNameError` with the closest built-in names for a bare word).
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
    try:
        return FilterBank.from_pretrained(
            repo_id_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            force_download=force_download,
        )
    except BankNotFoundError as e:
        if "/" in name or os.sep in name or isinstance(e, UnknownNameError):
            raise
        # a bare word: no bank on the Hub has no org, so it was most likely a built-in name mistyped
        close = difflib.get_close_matches(name, list(BUILTIN_BANKS), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"{e}{hint} Built-in banks: {', '.join(BUILTIN_BANKS)} (`masterkey list banks`); "
                               "otherwise a local folder or a Hub repo id 'org/name'.", name=name, kind="bank",
                               suggestions=close) from None  # fmt: skip


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    ignore_patterns: Sequence[str] | None = None,
    allow_patterns: Sequence[str] | None = None,
) -> str:
    """Create the Hub model repo ``repo_id`` if needed and upload ``folder`` to it (only files matching
    ``allow_patterns`` when given, files matching ``ignore_patterns`` left out); returns the repo's URL. The one upload
    path of masterkey: banks and trained models. :func:`check_upload` runs first: nothing is created or uploaded
    when it would fail.

    Example:
        >>> push_folder("hub_cards/tf_efficientnet_lite0-imagenet-dw", "org/lite0-imagenet-dw")
        'https://huggingface.co/org/lite0-imagenet-dw'
    """
    check_upload(repo_id, token=token)
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=LIBRARY_VERSION)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    _logger.info("Uploading %s to %s", folder, url)
    api.upload_folder(
        repo_id=url.repo_id,
        folder_path=str(folder),
        commit_message=commit_message or f"Upload {Path(folder).name} with masterkey",
        ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        allow_patterns=list(allow_patterns) if allow_patterns else None,
    )
    return str(url)


def check_upload(repo_id: str, *, token: str | None = None) -> None:
    """Refuse (:class:`~masterkey.errors.HubError`), before any work, an upload that cannot succeed: an invalid repo
    id, the Hub switched off (``HF_HUB_OFFLINE=1``), or no token (neither given nor logged in).

    Example:
        >>> check_upload("org/convnext-imagenet-dw")  # raises HubError offline or without a token
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"{repo_id!r} is not a valid Hub repo id ({e}); use 'org/name'.") from None
    if hf_constants.is_offline_mode():
        raise HubError(f"Cannot upload to {repo_id!r}: HF_HUB_OFFLINE is set. Unset it, or use a dry run.")
    if token is None and get_token() is None:
        raise HubError(
            f"Cannot upload to {repo_id!r}: no Hugging Face token. Log in with `hf auth login`, set HF_TOKEN, or pass "
            "token=..."
        )
