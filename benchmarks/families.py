"""The timm families of depthwise-separable CNNs masterkey is tested and documented on, found in timm's registry.

Used by ``benchmarks/support_table.py`` and the tests (``tests/test_families.py``, ``tests/test_cross_arch.py``), not
part of the installed package: a family is a regular expression over timm architecture names, and :func:`smallest_variant` picks its smallest member from whatever the installed timm
registers, so a new timm release with new variants is covered without editing a list of model names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import timm
import torch

# Size words in timm names, smallest first; a name without one ranks after them all.
_SIZE_WORDS = (
    "zepto", "atto", "femto", "pico", "nano", "xxs", "xx", "xs", "x", "tiny", "t", "small", "s", "lite", "minimal",
    "mini", "medium", "m", "base", "b", "large", "l", "xl", "huge",
)  # fmt: skip
# How many names ranked smallest by their size words are built (on the meta device) to compare parameter counts.
_SHORTLIST = 5


@dataclass(frozen=True)
class Family:
    """A family of timm architectures: ``pattern`` matches every member's full name."""

    name: str
    pattern: str
    #: multi-branch blocks (RepVGG / MobileOne style) that must be fused before depthwise kernels are extracted
    reparameterize: bool = False

    def members(self) -> list[str]:
        return [n for n in timm.list_models() if re.fullmatch(self.pattern, n)]


FAMILIES = (
    Family("ConvNeXt", r"convnext_[a-z]+(_rms)?"),
    Family("ConvNeXt-V2", r"convnextv2_[a-z]+"),
    Family("EfficientNet", r"efficientnet_b\d"),
    Family("EfficientNet-Lite", r"efficientnet_lite\d"),
    Family("TF-EfficientNet", r"tf_efficientnet_b\d"),
    Family("TF-EfficientNet-Lite", r"tf_efficientnet_lite\d"),
    Family("EfficientNetV2", r"tf_efficientnetv2_b\d"),
    Family("MobileNetV2", r"mobilenetv2_\d+"),
    Family("MobileNetV3", r"mobilenetv3_(small|large)_\d+"),
    Family("MobileNetV4", r"mobilenetv4_conv_[a-z]+(_\d+)?"),
    Family("MixNet", r"mixnet_[a-z]+"),
    Family("GhostNet", r"ghostnet_\d+"),
    Family("GhostNetV2", r"ghostnetv2_\d+"),
    Family("RepViT", r"repvit_m\d(_\d+)?", reparameterize=True),
    Family("FastViT", r"fastvit_[a-z]+\d+", reparameterize=True),
    Family("MobileOne", r"mobileone_s\d", reparameterize=True),
    Family("EdgeNeXt", r"edgenext_[a-z_]+"),
    Family("InceptionNeXt", r"inception_next_[a-z]+"),
    Family("MnasNet", r"mnasnet_\d+"),
    Family("LCNet", r"lcnet_\d+"),
    Family("TinyNet", r"tinynet_[a-e]"),
    Family("ReXNet", r"rexnet_\d+"),
    Family("StarNet", r"starnet_s\d+"),
    Family("MambaOut", r"mambaout_[a-z]+"),
    Family("RepGhostNet", r"repghostnet_\d+", reparameterize=True),
    Family("GhostNetV3", r"ghostnetv3_\d+", reparameterize=True),
    Family("EfficientViT", r"efficientvit_b\d"),
    Family("MobileViT", r"mobilevit_x*s"),
    Family("TinyViT", r"tiny_vit_\d+m_\d+", reparameterize=True),  # conv-norm pairs with a fuse method
    Family("FBNet", r"fbnet(c_\d+|v3_[a-z])"),
    Family("HardCoReNAS", r"hardcorenas_[a-f]"),
    Family("HGNetV2", r"hgnetv2_b\d"),
)


def _size_rank(name: str) -> tuple:
    tokens = re.findall(r"[a-z]+|\d+", name)
    words = [_SIZE_WORDS.index(t) for t in tokens if t in _SIZE_WORDS]
    return min(words, default=len(_SIZE_WORDS)), [int(t) for t in tokens if t.isdigit()], name


def _num_parameters(name: str) -> int:
    with torch.device("meta"):  # builds the module tree without allocating or initialising any weight
        model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters())


@lru_cache(maxsize=None)
def smallest_variant(family: Family) -> str:
    """The member of ``family`` with the fewest parameters among the few its size words rank smallest
    (``atto`` < ``tiny`` < ``small``, then width multipliers and version numbers)."""
    members = family.members()
    if not members:
        raise LookupError(f"timm {timm.__version__} registers no model matching {family.pattern!r} ({family.name}).")
    shortlist = sorted(members, key=_size_rank)[:_SHORTLIST]
    return min(shortlist, key=lambda n: (_num_parameters(n), n))
