"""Deprecated: the experiments moved to :mod:`masterkey.research.experiments` (the research wing).

``import masterkey.experiments`` keeps working, with a ``DeprecationWarning``; every name it had is re-exported.
"""

from __future__ import annotations

import warnings

from .research.experiments import *  # noqa: F403 - the deprecated module is the new one under its old name
from .research.experiments import __all__  # noqa: F401
from .research.experiments.runner import _Runner, _train_in_worker  # noqa: F401 - pickled by name in old workers
from .research.experiments.statistics import _chance_levels  # noqa: F401

warnings.warn(
    "masterkey.experiments moved to masterkey.research.experiments; import it from there.",
    DeprecationWarning,
    stacklevel=2,
)
