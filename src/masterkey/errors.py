"""Every exception masterkey raises on purpose.

All of them derive from :class:`MasterKeyError`, so ``except MasterKeyError`` catches any failure that masterkey
diagnosed itself; each message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "MasterKeyError",
    "ArgumentError",
    "BankFormatError",
    "BankNotFoundError",
    "UnknownNameError",
    "InvalidFiltersError",
    "IncompatibleBankError",
    "UnsupportedModelError",
    "CheckpointError",
    "HubError",
    "ResultsFormatError",
    "MappingError",
    "FitError",
    "DatasetError",
    "TrainingConfigError",
    "WorkerError",
]


class MasterKeyError(Exception):
    """Base class of every error raised by masterkey."""


class ArgumentError(MasterKeyError, ValueError):
    """An argument masterkey was given is not one it knows (a ``trainable`` policy, a ``resize`` method, ...), checked
    before anything is changed."""


class BankFormatError(MasterKeyError, ValueError):
    """A filter bank on disk is malformed: missing or corrupted files, unknown format version, or a manifest
    that disagrees with the tensors."""


class BankNotFoundError(MasterKeyError, FileNotFoundError):
    """A filter bank could not be found: not a local folder, not on the Hub, or not cached while offline."""


class UnknownNameError(BankNotFoundError):
    """A name that fits none of the forms masterkey accepts where it was given (a bank, a ``--filters`` spec): the
    message says what is accepted and, where some are close, which names were probably meant
    (``masterkey list banks|filters`` lists them). A :class:`BankNotFoundError`, as unknown names always were.

    Attributes:
        name: the name as given.
        kind: what was asked for (``"bank"`` or ``"filters"``).
        suggestions: the known names closest to it, best first (may be empty).
    """

    def __init__(self, message: str, *, name: str = "", kind: str = "", suggestions=()):
        super().__init__(message)
        self.name = name
        self.kind = kind
        self.suggestions = list(suggestions)


class InvalidFiltersError(MasterKeyError, ValueError):
    """Filter values that cannot be used, such as NaN or Inf kernels."""


class IncompatibleBankError(MasterKeyError, ValueError):
    """A filter bank does not fit a model: missing modules or shapes that differ.

    Attributes:
        missing: target depthwise convs that received no filters.
        mismatched: ``{target: (expected_shape, bank_shape)}`` for shapes that differ.
        unexpected: bank entries with no matching target.
    """

    def __init__(self, message: str, *, missing=(), mismatched=None, unexpected=()):
        super().__init__(message)
        self.missing = list(missing)
        self.mismatched = dict(mismatched or {})
        self.unexpected = list(unexpected)


class UnsupportedModelError(MasterKeyError, ValueError):
    """A model masterkey cannot work with: unknown timm name, no depthwise convolutions, only CondConv experts,
    or unfused reparameterizable branches."""


class CheckpointError(MasterKeyError, ValueError):
    """A model checkpoint cannot be used: missing, not a file, truncated or corrupt, or holding pickled objects that a
    safe load refuses."""


class HubError(MasterKeyError, OSError):
    """The Hub cannot be used for what was asked: downloads or uploads are off (``HF_HUB_OFFLINE``), no token, or an
    invalid repo id."""


class ResultsFormatError(MasterKeyError, ValueError):
    """An experiment's ``results.json`` (or a card results file) is malformed or names something it must not (a
    folder outside the output folder, say)."""


class MappingError(MasterKeyError, ValueError):
    """A layer mapping between a bank and a model is invalid (for example a callable returned an unknown name)."""


class FitError(MasterKeyError, ValueError):
    """Fitting filters to the universal keys failed: empty input or keys of the wrong size."""


class DatasetError(MasterKeyError, ValueError):
    """A dataset cannot be used for image classification as given (missing columns, empty split, bad images)."""


class TrainingConfigError(MasterKeyError, ValueError):
    """A training run was configured inconsistently (bad checkpoint path, output folder of another run, ...)."""


class WorkerError(MasterKeyError, RuntimeError):
    """A worker process that trained a run of an experiment (``--jobs``) died without a result (killed, out of
    memory). The runs that finished are kept: rerun with ``--resume``."""
