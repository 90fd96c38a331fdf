"""The record of one training run: :class:`RunResults`, the dataclass behind the ``results.json`` a run writes.

Training builds it and writes :meth:`RunResults.to_dict` (the same JSON shape as always: older ``results.json`` files
read back with :meth:`RunResults.from_dict`, fields they predate taking their defaults); everything that reads runs
(the experiments, the cards) reads them through it, by attribute, not by string keys.

Example:
    >>> run = RunResults.from_json("outputs/transfer/run/results.json")
    >>> run.final.accuracy, run.num_labels, run.accuracy_history
    (0.9505, 10, [0.81, 0.9, 0.9505])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ResultsFormatError

__all__ = ["FinalMetrics", "ParameterCounts", "RunResults"]


@dataclass(frozen=True)
class FinalMetrics:
    """The run's last evaluation: accuracy, top-5, losses and how many images it was scored on."""

    accuracy: float
    eval_loss: float | None = None
    train_loss: float | None = None
    top5_accuracy: float | None = None
    num_eval_examples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # the order results.json has always had
        keys = ("accuracy", "top5_accuracy", "eval_loss", "train_loss", "num_eval_examples")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class ParameterCounts:
    """Trainable and total parameters of the trained model."""

    trainable: int
    total: int
    trainable_percent: float


@dataclass(frozen=True)
class RunResults:
    """One run's ``results.json``. ``filters``, ``dataset``, ``config``, ``data_config``, ``optimizer`` and
    ``versions`` stay mappings (their content varies by run); the properties below read what the experiments need.

    Example:
        >>> run = RunResults.from_dict(train_transfer(dataset_name="digits", max_train_steps=1))
        >>> run.final.accuracy > run.chance
    """

    output_dir: str
    model: str
    final: FinalMetrics
    resolution: int | None = None
    epochs_history: list[dict[str, Any]] = field(default_factory=list)
    completed_steps: int | None = None
    max_steps: int | None = None
    epochs: int | None = None
    resumed_from: dict[str, Any] | None = None
    train_time_s: float = 0.0
    train_samples_per_second: float = 0.0
    data_wait_share: float = 0.0
    train_samples_seen: int | None = None
    parameters: ParameterCounts | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    num_processes: int | None = None
    device: str | None = None
    cpu_threads_per_process: int | None = None
    mixed_precision: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    compile_time_s: float | None = None
    data_config: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    # the SHA-256 of the saved model.safetensors: a run that uses this network's filters records it, so a grid can
    # tell a network trained again to the same bytes from one trained to others
    weights_sha256: str | None = None

    # -- what the experiments read ---------------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """How many classes the dataset has."""
        return int(self.dataset["num_labels"])

    @property
    def eval_split(self) -> str | None:
        """The split the run was scored on (``"test"``, or ``"train (held out)"`` for a tuning run)."""
        return self.dataset.get("eval_split")

    @property
    def num_eval(self) -> int:
        """How many images the final accuracy was measured on (at least 1)."""
        return max(1, self.final.num_eval_examples or self.dataset.get("num_eval") or 1)

    @property
    def accuracy_history(self) -> list[float | None]:
        """The accuracy after each epoch, in order."""
        return [epoch.get("accuracy") for epoch in self.epochs_history]

    @property
    def trainable_percent(self) -> float | None:
        return None if self.parameters is None else self.parameters.trainable_percent

    # -- JSON --------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content, keys in the order runs have always written them."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FinalMetrics):
                value = value.to_dict()
            elif isinstance(value, ParameterCounts):
                value = asdict(value)
            out[f.name] = value
        # results.json has always opened with where, what and at which resolution, then the loop's record
        head = ("output_dir", "model", "resolution", "final")
        return {**{k: out[k] for k in head}, **{k: v for k, v in out.items() if k not in head}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "a run's results") -> RunResults:
        """The record of a ``results.json`` content (this version's or an older one's).

        Raises:
            ResultsFormatError: not a mapping, or without the final accuracy, the model or the output folder.
        """
        if isinstance(data, RunResults):
            return data
        try:
            final = dict(data["final"])
            values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
            values["final"] = FinalMetrics(**{k: final.get(k) for k in (f.name for f in fields(FinalMetrics))})
            if data.get("parameters") is not None:
                values["parameters"] = ParameterCounts(**dict(data["parameters"]))
            record = cls(**values)
        except (KeyError, TypeError, ValueError) as e:
            raise ResultsFormatError(
                f"{origin} is not a masterkey results.json ({e!r}); train the run again."
            ) from None
        if not isinstance(record.final.accuracy, (int, float)):
            raise ResultsFormatError(f"{origin} has no final accuracy; train the run again.")
        return record

    @classmethod
    def from_json(cls, path: str | Path) -> RunResults:
        """The record of a ``results.json`` file.

        Raises:
            ResultsFormatError: the file cannot be read or is not a run's results.

        Example:
            >>> run = RunResults.from_json("docs/experiments/cross-family/regime/runs/"
            ...                            "mobilenetv2_100-animal-mnist-64px__12-epochs__seed5100/results.json")
            >>> round(run.final.accuracy, 3), run.num_labels, run.eval_split
            (0.954, 10, 'train (held out)')
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ResultsFormatError(f"Cannot read {path}: {e}") from None
        return cls.from_dict(data, origin=str(path))
