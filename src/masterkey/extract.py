"""Finding the depthwise convolutions of a model and extracting their kernels into a :class:`FilterBank`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm.data
import torch
from timm.layers import CondConv2d
from torch import nn

from . import _libraries, _timm
from .bank import FilterBank, KernelSpec, make_config, relative_depths, stage_index
from .errors import ArgumentError, UnsupportedModelError

__all__ = ["DepthwiseConv", "find_depthwise_convs", "extract_filters", "is_depthwise", "measure_feature_strides"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthwiseConv:
    """One depthwise conv of a model: its module path, the module, and its manifest entry."""

    name: str
    module: nn.Conv2d
    spec: KernelSpec


def is_depthwise(module: nn.Module) -> bool:
    """A spatial depthwise conv: an ``nn.Conv2d`` (timm's ``Conv2dSame`` included) with ``groups == in_channels > 1``
    and a kernel larger than 1x1.

    Each split of timm's ``MixedConv2d`` is such a conv, so it becomes its own entry. A channel multiplier
    (``out_channels = k * in_channels``) is allowed. A 1x1 depthwise conv is a per-channel scale, not a spatial
    filter, and is left out.

    Example:
        >>> is_depthwise(nn.Conv2d(32, 32, 3, groups=32)), is_depthwise(nn.Conv2d(32, 32, 1, groups=32))
        (True, False)
    """
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels > 1
        and module.out_channels % module.in_channels == 0
        and module.kernel_size != (1, 1)
    )


def find_depthwise_convs(model: nn.Module, *, feature_strides: bool = False) -> list[DepthwiseConv]:
    """Every depthwise conv of ``model`` in module registration order (timm registers modules in forward order).

    With ``feature_strides`` each spec also carries the scale of the feature map its conv reads
    (:func:`measure_feature_strides`), which costs one forward pass; banks record it, and the ``"depth"`` mapping
    aligns architectures by it.

    Raises:
        UnsupportedModelError: the model has no depthwise convs, only ``CondConv2d`` experts, or depthwise convs
            inside reparameterizable blocks that are not fused yet (fuse them with
            ``timm.utils.reparameterize_model(model)``, or pass ``reparameterize=True`` to masterkey's functions).

    Example:
        >>> import timm
        >>> convs = find_depthwise_convs(timm.create_model("mixnet_s"))
        >>> convs[1].name, convs[1].spec.kernel_size
        ('blocks.1.0.conv_dw', (3, 3))
    """
    found = [(name, m) for name, m in model.named_modules() if is_depthwise(m)]
    if not found:
        cond = [n for n, m in model.named_modules() if isinstance(m, CondConv2d) and m.groups == m.in_channels > 1]
        if cond:
            raise UnsupportedModelError(
                f"{type(model).__name__} has depthwise convs only as CondConv2d experts ({len(cond)}, e.g. {cond[0]}), "
                "whose kernels are mixed per input; masterkey supports plain depthwise nn.Conv2d. Use the non-CondConv "
                "variant of the architecture."
            )
        raise UnsupportedModelError(
            f"{type(model).__name__} has no depthwise convolution (nn.Conv2d with groups == in_channels > 1 and a "
            "spatial kernel). masterkey works with depthwise-separable CNNs such as ConvNeXt, EfficientNet, MobileNet."
        )
    inside = _timm.unfused_branches(model, is_depthwise)
    if inside:
        raise UnsupportedModelError(
            f"{len(inside)} depthwise convs sit in reparameterizable multi-branch blocks that are not fused yet "
            f"(e.g. {inside[0]}). Fuse the model first: model = timm.utils.reparameterize_model(model), or pass "
            "reparameterize=True."
        )
    depths = relative_depths([name for name, _ in found])
    strides = measure_feature_strides(model, [name for name, _ in found]) if feature_strides else {}
    return [
        DepthwiseConv(
            name=name,
            module=m,
            spec=KernelSpec(
                name=name,
                in_channels=m.in_channels,
                out_channels=m.out_channels,
                kernel_size=tuple(m.kernel_size),
                stride=tuple(m.stride),
                dilation=tuple(m.dilation),
                index=i,
                relative_depth=depths[i],
                stage=stage_index(name),
                feature_stride=strides.get(name),
            ),
        )
        for i, (name, m) in enumerate(found)
    ]


def measure_feature_strides(model: nn.Module, names: list[str]) -> dict[str, int]:
    """The scale of the feature map each named conv reads, in input pixels per feature-map pixel (1, 2, 4, ...).

    Measured with one forward pass of a blank image at the model's input size (timm's data config, else 224 px),
    in eval mode and without gradients; the model's training flags are restored and no random number is drawn. A
    model whose forward cannot run on such an image (one that needs other inputs), or a conv that the pass does not
    reach, gets the scale derived from the convs and pooling layers registered before it, in forward order: the
    product of their strides, 1x1 strided convs left out as the parallel shortcuts they are in residual blocks.

    Example:
        >>> import timm
        >>> strides = measure_feature_strides(timm.create_model("mobilenetv2_100"), ["blocks.1.0.conv_dw"])
        >>> strides["blocks.1.0.conv_dw"]
        2
    """
    modules = dict(model.named_modules())
    measured: dict[str, int] = {}
    height = _input_height(model)
    handles = []
    for name in names:
        def record(_module: nn.Module, inputs: tuple, *, name: str = name) -> None:
            if name not in measured and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() == 4:
                measured[name] = max(1, round(height / inputs[0].shape[-2]))

        handles.append(modules[name].register_forward_pre_hook(record))
    modes = {m: m.training for m in model.modules()}
    parameter = next(model.parameters(), None)
    try:
        model.eval()
        blank = torch.zeros(1, 3, height, height, device=parameter.device if parameter is not None else None,
                            dtype=parameter.dtype if parameter is not None else None)  # fmt: skip
        with torch.no_grad():
            model(blank)
    except Exception as e:  # noqa: BLE001 - any model that cannot run a blank image falls back to derivation
        _logger.info("Feature strides of %s derived from its convs: its forward on a blank %dx%d image failed (%s)",
                     type(model).__name__, height, height, e)  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    if all(name in measured for name in names):
        return {name: measured[name] for name in names}
    derived = _derived_feature_strides(model)  # only for convs the pass did not reach
    return {name: measured.get(name, derived.get(name, 1)) for name in names}


def _input_height(model: nn.Module) -> int:
    try:
        return int(timm.data.resolve_model_data_config(model)["input_size"][-2])
    except Exception:  # noqa: BLE001 - a model timm knows nothing of: the common ImageNet size
        return 224


def _derived_feature_strides(model: nn.Module) -> dict[str, int]:
    scale, strides = 1, {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            strides[name] = scale
            if module.kernel_size != (1, 1):  # a strided 1x1 conv is a shortcut beside the main path
                scale *= module.stride[0]
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            stride = module.stride if isinstance(module.stride, int) else module.stride[0]
            scale *= stride
    return strides


def prepare_model(
    model: nn.Module | str,
    *,
    reparameterize: bool,
    weights: str | Path | None = None,
    pretrained: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """A timm name becomes a model (its pretrained weights with ``pretrained``, a local checkpoint with ``weights``,
    else a fresh one); unfused reparameterizable blocks are fused in place when ``reparameterize`` is true.

    Example:
        >>> model = prepare_model("repvit_m0_9", reparameterize=True)  # fresh weights, RepViT's branches fused
        >>> len(find_depthwise_convs(model))
        26
    """
    if isinstance(model, str):
        model = _timm.create_model(model, weights=weights, pretrained=pretrained, **model_kwargs)
    elif weights is not None:
        _timm.load_weights(model, weights)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch nn.Module or a timm model name, got {type(model).__name__}.")
    if reparameterize and _timm.unfused_branches(model, is_depthwise):
        model = _timm.reparameterize(model, inplace=True)
    return model


#: What a bank extracted from a randomly initialised model says about its weights.
RANDOM_WEIGHTS = "randomly initialised (timm's init), for baselines"


def extract_filters(
    model: nn.Module | str,
    *,
    pretrained: bool | None = None,
    weights: str | Path | None = None,
    reparameterize: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **source_info: Any,
) -> FilterBank:
    """Extract every depthwise kernel of ``model`` into a :class:`FilterBank`.

    A name with a pretrained tag (``"convnext_tiny.fb_in1k"``) or a Hub id (``"hf-hub:org/model"``) means its
    pretrained weights, loaded through timm's Hub code (the Hugging Face cache, ``HF_HUB_OFFLINE``), and the bank
    records where they came from (Hub id, resolved commit, tag, training dataset, licence, timm version). A bare
    architecture name needs one of ``pretrained=True`` (timm's default pretrained weights), ``weights=PATH`` or
    ``pretrained=False`` (randomly initialised kernels, recorded as such: for baselines only): random filters are
    never extracted by accident.

    Models of other libraries are built and loaded by their own code: ``"torchvision:<builder>"`` is
    ``torchvision.models.get_model_builder(builder)()`` with ``weights=PATH`` (loaded weights-only; every key and shape
    must fit, the first mismatch is named), torchvision's own weights (``"torchvision:mobilenet_v2.IMAGENET1K_V1"``,
    or ``pretrained=True`` for its default ones, from torch's hub cache) or ``pretrained=False``;
    ``"transformers:<org>/<name>[@revision]"`` or ``"transformers:<folder>"`` is
    ``transformers.AutoModelForImageClassification.from_pretrained`` (ConvNeXt, ConvNeXt-V2, MobileNetV1/V2,
    EfficientNet, ...; the Hugging Face cache, ``HF_HUB_OFFLINE``), the commit it resolved recorded. Every bank records
    the library (``source_library``: timm, torchvision, transformers, the top-level package of your own module, or
    ``user`` for a class defined in a script) and class (``source_class``) of its model, and the SHA-256 of the
    checkpoint it was read from (``source_sha256``).

    Args:
        model: an ``nn.Module`` (left unchanged, extracted with the weights it holds), a timm model name, or a
            ``torchvision:`` / ``transformers:`` name.
        pretrained: load the name's pretrained weights (default: when the name has a tag or is a Hub id).
        weights: local checkpoint to load (safetensors or a torch file, read with ``weights_only=True``).
        reparameterize: fuse multi-branch blocks (FastViT, RepViT, MobileOne) on a copy before extracting, so each
            depthwise conv contributes the kernel it computes with. With ``False`` such models are refused.
        model_kwargs: passed to ``timm.create_model`` when ``model`` is a name (to the torchvision builder or
            ``from_pretrained`` for the other libraries).
        source_info: written to the bank's ``config.json``, over what masterkey recorded: ``source_model``,
            ``source_weights``, ``source_dataset``, ``source_license``, ``description``, or any other key.

    Raises:
        ArgumentError: a bare name without ``pretrained`` or ``weights``, or ``pretrained`` with a module or with
            ``weights``.
        CheckpointError: weights that cannot be had (offline and not cached, a damaged or pickled file), or a
            checkpoint that does not fit a torchvision builder (the first missing / unexpected key or shape named).
        UnsupportedModelError: an unknown name or builder, or a model without depthwise convs.

    Example:
        >>> import masterkey
        >>> bank = masterkey.extract_filters("convnext_tiny.fb_in1k")  # ImageNet weights from the Hub (or its cache)
        >>> bank.config["source_revision"]  # the commit the weights were downloaded at
        >>> random = masterkey.extract_filters("convnext_tiny", pretrained=False)  # a baseline, recorded as random
        >>> tv = masterkey.extract_filters("torchvision:mobilenet_v2", weights="mobilenet_v2-b0353104.pth")
        >>> tv.config["source_library"], tv.config["source_sha256"][:8]
        ('torchvision', 'b0353104')
        >>> hf = masterkey.extract_filters("transformers:facebook/convnext-tiny-224")
        >>> hf.config["source_revision"]  # the commit transformers downloaded the model at
    """
    info: dict[str, Any] = {}
    requested = model
    if isinstance(model, str) and _libraries.is_library_name(model):
        # built and loaded by the model's own library; weights loaded into it draw nothing from the random stream
        with torch.random.fork_rng(devices=[], enabled=weights is not None or pretrained is not False):
            loaded = _libraries.load(model, weights=weights, pretrained=pretrained, **(model_kwargs or {}))
        model, info, weights, pretrained = loaded.model, dict(loaded.provenance), None, None
    if isinstance(model, str):
        # an unknown name or tag first: the likelier mistake
        _timm.check_name(model, pretrained=bool(pretrained) or model.startswith((_timm.HUB_PREFIX, _timm.LOCAL_PREFIX)))
        pretrained = _resolve_pretrained(model, pretrained=pretrained, weights=weights)
        if weights is None and not pretrained:
            info["source_weights"] = RANDOM_WEIGHTS
            info["description"] = (
                f"Randomly initialised depthwise kernels of `{model}` (timm's init, no training): a baseline to "
                "compare master-key filters with, not master-key filters themselves."
            )
    elif pretrained is not None:
        raise ArgumentError(
            "pretrained= applies to a timm model name; a module is extracted with the weights it holds (load them "
            "first, or pass weights=PATH)."
        )
    if isinstance(model, nn.Module) and reparameterize and _timm.unfused_branches(model, is_depthwise):
        model = _timm.reparameterize(model, inplace=False)  # never change the caller's model
    # a model created only to be overwritten by weights must not draw from the global random stream: whether a bank
    # was built now or read from a cache would otherwise change every later random draw of the caller's run
    keep_rng = isinstance(model, str) and (weights is not None or bool(pretrained))
    with torch.random.fork_rng(devices=[], enabled=keep_rng):
        model = prepare_model(model, reparameterize=reparameterize, weights=weights, pretrained=bool(pretrained),
                              **(model_kwargs or {}))  # fmt: skip
    if isinstance(source := requested, str) and source.startswith(_timm.LOCAL_PREFIX):
        # a local folder's config describes the architecture, not these weights' tag, data or licence
        weights_file = next(Path(source.removeprefix(_timm.LOCAL_PREFIX)).glob("*.safetensors"), None)
        digest = _timm.sha256_file(weights_file) if weights_file else None
        info["source_weights"] = f"{source}{f' (sha256 {digest[:16]})' if digest else ''}"
        info["source_sha256"] = digest
    elif pretrained:
        info.update({k: v for k, v in _timm.pretrained_provenance(model).items() if v is not None})
    elif weights is not None:  # read (and so checked) by prepare_model just above
        digest = _timm.sha256_file(weights)
        info.update(source_weights=f"{Path(weights).name} (sha256 {digest[:16]})", source_sha256=digest)
    for key, value in _libraries.module_provenance(model).items():  # the library and class of any module
        info.setdefault(key, value)
    convs = find_depthwise_convs(model, feature_strides=True)
    info.setdefault("source_model", _timm.model_name(model) or type(model).__name__)
    filters = {conv.name: conv.module.weight.detach().to(torch.float32).clone() for conv in convs}
    return FilterBank(filters, make_config([conv.spec for conv in convs], **{**info, **source_info}))


def _resolve_pretrained(name: str, *, pretrained: bool | None, weights: str | Path | None) -> bool:
    if weights is not None:
        if pretrained:
            raise ArgumentError("Pass either pretrained=True or weights=PATH, not both: they are two sets of weights.")
        return False
    if pretrained is None:
        if not _timm.names_pretrained_weights(name):
            raise ArgumentError(
                f"{name!r} names an architecture, not weights. Pass a pretrained tag ('{name}.<tag>', see "
                f"timm.list_pretrained('{name}.*')) or pretrained=True for timm's default pretrained weights, "
                "weights=PATH for your own checkpoint, or pretrained=False for randomly initialised kernels "
                "(baselines only)."
            )
        return True
    return pretrained


