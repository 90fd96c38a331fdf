"""Constants of the filter-bank format and the settings read from the environment, all in one place."""

from __future__ import annotations

import os
from pathlib import Path

#: Version of this release (``masterkey.__version__``), written into configs and sent with Hub requests.
LIBRARY_VERSION = "0.1.0"
#: Version of the on-disk filter-bank format written by this release; readers accept versions up to it.
FORMAT_VERSION = 1
#: Name written as ``library_name`` in ``config.json`` and on model cards.
LIBRARY_NAME = "masterkey"

FILTERS_NAME = "filters.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"

PAPER_MASTER_KEY = "https://arxiv.org/abs/2412.16751"
PAPER_UNIVERSAL = "https://arxiv.org/abs/2509.11711"
PAPER_SCALE_SPACE = "https://arxiv.org/abs/2509.12746"

CITATION_MASTER_KEY = (
    "Babaiee, Kiasari, Rus, Grosu. The Master Key Filters Hypothesis: Deep Filters Are General. AAAI 2025. "
    "arXiv:2412.16751"
)
CITATION_UNIVERSAL = (
    "Babaiee, Kiasari, Rus, Grosu. The Quest for Universal Master Key Filters in DS-CNNs. NeurIPS 2025. "
    "arXiv:2509.11711"
)
CITATION_SCALE_SPACE = (
    "Lindeberg, Babaiee, Kiasari. Modelling and analysis of the 8 filters from the 'master key filters hypothesis' "
    "for depthwise-separable deep networks in relation to idealized receptive fields based on scale-space theory. "
    "Journal of Mathematical Imaging and Vision, 2026. arXiv:2509.12746"
)
#: The public repository of the 8 learned keys and of the idealized models' code, its licensor and its licence.
REFERENCE_REPOSITORY = "https://github.com/tonylindeberg/masterfiltmodel"
REFERENCE_LICENSOR = "Copyright (2026) Tony Lindeberg"
REFERENCE_LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"


#: The paper's experiments (:data:`masterkey.research.experiments.EXPERIMENTS`) and their scales, named here so that the command
#: line can offer them without importing the training stack.
EXPERIMENT_NAMES = (
    "regime", "lr-sweep", "transfer-matrix", "layer-split", "source-size", "across-architectures", "cross-family",
)  # fmt: skip
SCALE_NAMES = ("quick", "small", "full")

#: The named rules that map a bank's entries onto a model's depthwise convs (``masterkey.mapping.MAPPINGS``): ``exact``
#: (same module path and shape), ``depth`` (by structure: kernel size, feature-map scale, position within it),
#: ``stage`` (relative depth by module-path stages, the earlier rule), ``size`` (the same kernel size first, then
#: stage); the command line's choices.
MAPPING_NAMES = ("exact", "depth", "stage", "size")


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


#: Where masterkey caches banks it builds itself (for example the ImageNet lite0 bank), and built-in datasets.
MASTERKEY_HOME = _env_path(
    "MASTERKEY_HOME", _env_path("XDG_CACHE_HOME", Path.home() / ".cache") / "masterkey"
)

#: Hub organisation our published banks live under (used for default repo ids and card snippets).
HUB_ORG = os.environ.get("MASTERKEY_HUB_ORG", "masterkey-filters")
