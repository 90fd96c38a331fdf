"""How big an experiment is and what it trains: :class:`Scale`, the named :data:`SCALES` and :class:`ExperimentConfig`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ...errors import TrainingConfigError
from ...mapping import MAPPINGS

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    """How big every training run of an experiment is."""

    name: str
    seeds: tuple[int, ...]
    resolution: int
    num_train_epochs: int
    max_train_steps: int | None
    max_train_samples: int | None
    max_eval_samples: int | None
    batch_size: int
    learning_rate: float
    num_warmup_steps: int
    #: training of the source networks whose filters are transferred (one seed: they are the "given" filters)
    source_epochs: int
    source_max_steps: int | None
    source_train_samples: int | None
    #: how many target datasets / architectures an experiment trains on (``None``: all of them)
    max_targets: int | None = None
    #: layer-split copies n = 1 and then every ``N / layer_groups`` depthwise layers up to all N (0: n = 1 only)
    layer_groups: int = 4
    #: epochs per dataset (the regime pilot's choice), for the runs and the source networks on it; others take
    #: ``num_train_epochs`` (runs) and ``source_epochs`` (source networks)
    dataset_epochs: Mapping[str, int] | None = None
    #: training images per dataset for the runs on it (a random subset drawn with each run's seed; a smaller target is
    #: a harder one); others take ``max_train_samples``. The source networks keep ``source_train_samples``
    dataset_train_samples: Mapping[str, int] | None = None
    #: the seed the source networks train with. A run with the same seed starts its fresh layers from the very values
    #: the source's started from (same architecture, same initialisation), which favours layers frozen from it; a
    #: seed none of the runs uses (say 1000) removes that. 0 keeps the source networks trained so far.
    source_seed: int = 0
    #: the seed of the tuning runs (regime, lr-sweep); ``None``: the first of ``seeds``. A planned experiment tunes
    #: with a seed none of its confirmatory runs uses
    tuning_seed: int | None = None
    #: several independent source networks per trained bank, one per seed here (``None``: one, ``source_seed``). The
    #: runs of ``seeds`` are dealt out in turn: run seed i takes the filters of the network of ``source_seeds[i % S]``,
    #: so every interval of an arm built on them spans sources as well as seeds (the statistics cluster by source)
    source_seeds: tuple[int, ...] | None = None

    def source_groups(self, seeds: Sequence[int] | None = None) -> list[tuple[int, tuple[int, ...]]]:
        """The source networks and the run seeds each serves: ``[(source seed, run seeds), ...]``; ``seeds`` (the
        scale's by default) are dealt out over :attr:`source_seeds` in turn, or all go to ``source_seed``.

        Example:
            >>> replace(SCALES["quick"], seeds=(1, 2, 3, 4), source_seeds=(7, 8)).source_groups()
            [(7, (1, 3)), (8, (2, 4))]
        """
        seeds = tuple(self.seeds if seeds is None else seeds)
        if not self.source_seeds:
            return [(self.source_seed, seeds)]
        n = len(self.source_seeds)
        return [(source, seeds[i::n]) for i, source in enumerate(self.source_seeds) if seeds[i::n]]

    @property
    def tuning_seeds(self) -> tuple[int, ...]:
        """The seeds the tuning experiments (regime, lr-sweep) run: :attr:`tuning_seed`, else the first seed."""
        return self.seeds[:1] if self.tuning_seed is None else (self.tuning_seed,)

    def epochs(self, dataset: str | None, *, source: bool = False) -> int:
        """The epochs a run (or, with ``source``, a source network) trains on ``dataset``: the dataset's own where
        :attr:`dataset_epochs` names it, else :attr:`num_train_epochs` (:attr:`source_epochs`).

        Example:
            >>> ExperimentConfig.from_json("docs/experiments/transfer-matrix/config.json").scale.epochs("animal-mnist")
            6
        """
        return (self.dataset_epochs or {}).get(dataset, self.source_epochs if source else self.num_train_epochs)

    def train_samples(self, dataset: str | None) -> int | None:
        """The training images a run on ``dataset`` draws: the dataset's own number where
        :attr:`dataset_train_samples` names it, else :attr:`max_train_samples` (``None``: all)."""
        return (self.dataset_train_samples or {}).get(dataset, self.max_train_samples)


#: ``quick`` runs in the test suite (one step per run); ``small`` trains on 2,000 images per run at 32 px
#: (``docs/experiments-small``, an earlier regime); ``full`` on every image at 64 px (``tf_efficientnet_lite0``'s last
#: feature map 2x2), for the epochs the regime pilot chose per dataset (``docs/experiments/regime``: from scratch
#: plateaus at 20 epochs on digits and 6 on Animal-MNIST); the other datasets and the source networks train 6.
SCALES: dict[str, Scale] = {
    "quick": Scale("quick", seeds=(0, 1, 2), resolution=32, num_train_epochs=1, max_train_steps=1,
                   max_train_samples=16, max_eval_samples=16, batch_size=8, learning_rate=2e-3, num_warmup_steps=0,
                   source_epochs=1, source_max_steps=1, source_train_samples=32, max_targets=1,
                   layer_groups=0),
    "small": Scale("small", seeds=(0, 1, 2), resolution=32, num_train_epochs=3, max_train_steps=None,
                   max_train_samples=2000, max_eval_samples=500, batch_size=64, learning_rate=2e-3,
                   num_warmup_steps=10, source_epochs=4, source_max_steps=None, source_train_samples=2000),
    "full": Scale("full", seeds=(0, 1, 2), resolution=64, num_train_epochs=6, max_train_steps=None,
                  max_train_samples=None, max_eval_samples=None, batch_size=64, learning_rate=2e-3,
                  num_warmup_steps=50, source_epochs=6, source_max_steps=None, source_train_samples=None,
                  dataset_epochs={"digits": 20, "animal-mnist": 6}),
}  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    """What the experiments train: the architecture, the datasets, the transferred bank, and the :class:`Scale`.

    The defaults are the README's setting: our real ImageNet ``tf_efficientnet_lite0`` bank and the built-in offline
    datasets. Any dataset ``--dataset_name`` takes (a Hub id, a local folder) and any timm DS-CNN serve, except that
    ``split_dataset`` must be a built-in dataset. Every run writes its whole config as ``config.json`` beside its
    results; ``masterkey experiment NAME --config config.json`` runs it again.

    Example:
        >>> config = ExperimentConfig.from_dict({"model": "mobilenetv3_small_100", "scale": "small"})
        >>> run_experiment("transfer-matrix", config, out_dir="outputs/experiments")
    """

    scale: Scale = SCALES["quick"]
    #: the architecture trained by transfer-matrix, layer-split and source-size (the bank's own by default)
    model: str = "tf_efficientnet_lite0"
    #: the pretrained bank of transfer-matrix and across-architectures (anything ``load_master_filters`` takes)
    bank: str = "imagenet-lite0"
    #: how transfer-matrix maps the bank onto ``model``: ``exact``, or ``depth`` when the bank is another family's
    mapping: str = "exact"
    #: transfer-matrix: every dataset is a target, and a bank is trained on each
    datasets: tuple[str, ...] = ("digits", "animal-mnist")
    #: transfer-matrix: more banks, each an arm of its own (another model's by ``extra_mapping``: e.g. the ImageNet
    #: lite1 / lite2 banks in lite0 by depth, a stronger source of the same data), on ``extra_banks_datasets`` (all
    #: datasets when ``None``)
    extra_banks: tuple[str, ...] = ()
    extra_mapping: str = "depth"
    extra_banks_datasets: tuple[str, ...] | None = None
    #: transfer-matrix: dataset -> a longer budget in epochs at which from scratch and the bank train again (does the
    #: frozen bank only speed training up, or does it still win once scratch has converged?)
    long_epochs: Mapping[str, int] = field(default_factory=dict)
    #: transfer-matrix: the seeds of the ``long_epochs`` arms (the scale's when ``None``): more seeds for the question
    #: whose answer is a small difference
    long_seeds: tuple[int, ...] | None = None
    #: layer-split: the built-in dataset whose classes are split into halves A and B
    split_dataset: str = "animal-mnist"
    #: layer-split: which transfers are trained: ``AnB`` (layers of a network trained on the other half, A: do they
    #: generalise?) and ``BnB`` (layers of a network trained on B itself: the control for co-adaptation)
    split_arms: tuple[str, ...] = ("AnB", "BnB")
    #: layer-split: the numbers n of first depthwise layers copied (``None``: n = 1, then every ``N / layer_groups``
    #: of the model's N up to all of them, by the scale's ``layer_groups``)
    split_layers: tuple[int, ...] | None = None
    #: source-size: banks trained on shares of ``source`` transfer to ``target``
    source: str = "animal-mnist"
    target: str = "digits"
    #: source-size: the control arms beside the shares, by kind of :func:`~.transfer_matrix.main_arms`: ``bank`` (the
    #: pretrained bank, a positive control: can the target tell good filters from bad?) and ``random`` (frozen random
    #: filters, the negative control)
    source_size_controls: tuple[str, ...] = ()
    #: across-architectures: the families the bank is injected into
    architectures: tuple[str, ...] = ("convnext_atto", "mobilenetv3_small_100")
    #: across-architectures: the mapping rules compared, one arm each (``depth``, ``size``: see masterkey.mapping); a
    #: rule that gives an architecture the same injection as an earlier one (``size`` where the bank has none of its
    #: kernel sizes) is not trained twice
    mappings: tuple[str, ...] = ("depth",)
    #: across-architectures: more versions of an architecture, each ``{"model": name, "model_kwargs": {...}}`` (timm
    #: create_model arguments): from scratch and the bank again, the bank paired with the variant's own from-scratch
    #: cell (e.g. ConvNeXt with its layer scale starting at 1 instead of 1e-6)
    model_variants: tuple[Mapping[str, Any], ...] = ()
    #: cross-family: the target architectures, each trained from scratch, with frozen random kernels and with each of
    #: ``family_banks`` (``mapping="depth"``) on the ``target`` dataset
    family_targets: tuple[str, ...] = ("tf_efficientnet_lite0", "mobilenetv2_100", "mobilenetv3_large_100",
                                       "convnext_atto")
    family_banks: tuple[str, ...] = ("imagenet-lite0", "imagenet-mobilenetv2")
    #: cross-family: target -> the bank of its own family (the within-family control for the other banks)
    own_family: Mapping[str, str] = field(default_factory=lambda: {"tf_efficientnet_lite0": "imagenet-lite0",
                                                                   "mobilenetv2_100": "imagenet-mobilenetv2"})
    #: cross-family: target -> bank -> more mapping rules, each a cell ``"<bank> (frozen, mapping=<rule>)"`` at the
    #: bank arm's rate, paired with that arm: how much the rule moves the bank's number (e.g. ``stage``, the earlier
    #: name-based rule)
    mapping_controls: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    #: epochs per target architecture (the regime pilot's choice with ``tuning_models``); others take the dataset's
    model_epochs: Mapping[str, int] = field(default_factory=dict)
    #: regime and lr-sweep: tune each of these architectures on ``target`` (``()``: ``model`` on each dataset)
    tuning_models: tuple[str, ...] = ()
    #: lr-sweep: more banks swept, each an arm ``"<bank> (frozen)"`` (with ``tuning_models``: ``mapping="depth"``)
    sweep_banks: tuple[str, ...] = ()
    #: the analysis plan (a ``plan.json`` committed in this repository before any test-split run; see
    #: :mod:`masterkey.research.plans`): results record the version in force and mark what it does not name exploratory
    plan: str | None = None
    #: each arm's learning rate where the lr-sweep chose one: dataset (or, for cross-family, target architecture) ->
    #: cell label -> learning rate (the others take the scale's)
    learning_rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: regime: the resolutions and, per dataset, the epoch budgets the pilot trains from scratch
    pilot_resolutions: tuple[int, ...] = (32, 64)
    pilot_epochs: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: {"digits": (10, 20, 40), "animal-mnist": (3, 6, 12)})
    #: lr-sweep: the learning rates each main arm tries, on the validation split carved from the training data
    sweep_learning_rates: tuple[float, ...] = (1e-3, 2e-3, 4e-3)
    #: lr-sweep: more rates for single arms, dataset (or, with ``tuning_models``, architecture) -> cell label ->
    #: rates: the step beyond the range where an arm's best rate lay at its edge (``benchmarks/apply_lr_sweep.py``
    #: writes them; :func:`~.tuning.edge_extensions`)
    sweep_extra_rates: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)
    #: lr-sweep: which main arms are swept, by kind: ``none`` (from scratch), ``bank``, ``fitted`` (the universal keys
    #: fitted to the bank), ``random``
    sweep_arms: tuple[str, ...] = ("none", "bank", "fitted", "random")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """A config from a mapping of its fields (missing ones keep their defaults). ``scale`` is a name of
        :data:`SCALES` or a mapping of :class:`Scale` fields; fields it leaves out come from the scale its ``name``
        names.

        Raises:
            TrainingConfigError: an unknown key or scale, or a value of the wrong kind.
        """
        if not isinstance(data, Mapping):
            raise TrainingConfigError(f"An experiment config is a JSON object of fields, not {type(data).__name__}.")
        _check_keys("experiment config", data, cls)
        values = dict(data)
        if "scale" in values:
            values["scale"] = _scale_from(values["scale"])
        for key in ("datasets", "architectures", "mappings", "pilot_resolutions", "sweep_learning_rates",
                    "sweep_arms", "extra_banks", "extra_banks_datasets", "model_variants", "split_arms", "long_seeds",
                    "family_targets", "family_banks", "tuning_models", "sweep_banks", "split_layers",
                    "source_size_controls"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key]) if isinstance(values[key], (list, tuple)) else (values[key],)
        unknown_arms = sorted(set(values.get("split_arms", ())) - {"AnB", "BnB"})
        if unknown_arms:
            raise TrainingConfigError(f"Unknown split_arms {unknown_arms}; choose from AnB, BnB.")
        if "model_variants" in values:
            values["model_variants"] = tuple(dict(zip(("model", "model_kwargs"), variant_of(v), strict=True))
                                             for v in values["model_variants"])  # fmt: skip
        if "mapping_controls" in values:
            values["mapping_controls"] = {model: {bank: tuple(rules) for bank, rules in dict(banks).items()}
                                          for model, banks in dict(values["mapping_controls"]).items()}  # fmt: skip
            unknown_rules = sorted({rule for banks in values["mapping_controls"].values() for rules in banks.values()
                                    for rule in rules} - set(MAPPINGS))  # fmt: skip
            if unknown_rules:
                raise TrainingConfigError(f"Unknown mapping_controls rule(s) {unknown_rules}; choose from "
                                          f"{', '.join(MAPPINGS)}.")  # fmt: skip
        if "sweep_extra_rates" in values:
            values["sweep_extra_rates"] = {key: {label: tuple(rates) for label, rates in dict(arms).items()}
                                           for key, arms in dict(values["sweep_extra_rates"]).items()}  # fmt: skip
        if "pilot_epochs" in values:
            values["pilot_epochs"] = {d: tuple(e) if isinstance(e, (list, tuple)) else (e,)
                                      for d, e in dict(values["pilot_epochs"]).items()}  # fmt: skip
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> ExperimentConfig:
        """A config from a JSON file (such as the ``config.json`` an experiment wrote).

        Example:
            >>> ExperimentConfig.from_json("docs/experiments/transfer-matrix/config.json").model
            'tf_efficientnet_lite0'
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TrainingConfigError(f"Cannot read the experiment config {str(path)!r}: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def learning_rate(self, dataset: str | None, label: str) -> float | None:
        """The learning rate :attr:`learning_rates` gives the arm ``label`` on ``dataset`` (``None``: the scale's).

        Example:
            >>> config = ExperimentConfig.from_json("docs/experiments/transfer-matrix/config.json")
            >>> config.learning_rate("animal-mnist", "from scratch")
            0.008
        """
        return self.learning_rates.get(dataset, {}).get(label)


def _check_keys(what: str, data: Mapping[str, Any], cls: type) -> None:
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainingConfigError(f"Unknown {what} key(s) {unknown}; known: {', '.join(known)}.")


def _scale_from(value: str | Scale | Mapping[str, Any]) -> Scale:
    if isinstance(value, Scale):
        return value
    if isinstance(value, str):
        if value not in SCALES:
            raise TrainingConfigError(f"Unknown scale {value!r}; choose one of {', '.join(SCALES)}.")
        return SCALES[value]
    if not isinstance(value, Mapping):
        raise TrainingConfigError(f"A scale is a name ({', '.join(SCALES)}) or an object of Scale fields.")
    _check_keys("scale", value, Scale)
    base = SCALES.get(value.get("name", ""))
    missing = [f.name for f in fields(Scale) if f.name not in value and f.default is MISSING]
    if base is None and missing:
        raise TrainingConfigError(f"The scale {value.get('name')!r} is not one of {', '.join(SCALES)}, so it needs "
                                  f"every field; missing: {', '.join(missing)}.")  # fmt: skip
    merged = {**(asdict(base) if base else {}), **value}
    merged["seeds"] = tuple(merged["seeds"])
    if merged.get("source_seeds") is not None:
        merged["source_seeds"] = tuple(merged["source_seeds"])
        if len(set(merged["source_seeds"])) != len(merged["source_seeds"]):
            raise TrainingConfigError(f"The scale's source_seeds {list(merged['source_seeds'])} repeat a seed: each "
                                      "names one independent source network.")  # fmt: skip
    return Scale(**merged)


def variant_of(entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(model, model_kwargs)`` of one ``model_variants`` entry, checked.

    Example:
        >>> variant_of({"model": "mobilenetv3_large_100", "model_kwargs": {"drop_rate": 0.2}})
        ('mobilenetv3_large_100', {'drop_rate': 0.2})
    """
    if not isinstance(entry, Mapping) or set(entry) != {"model", "model_kwargs"} or not isinstance(
            entry["model_kwargs"], Mapping) or not entry["model_kwargs"]:  # fmt: skip
        raise TrainingConfigError(f"A model_variants entry is {{'model': NAME, 'model_kwargs': {{...}}}} with at least "
                                  f"one create_model argument, got {entry!r}.")  # fmt: skip
    return str(entry["model"]), dict(entry["model_kwargs"])


#: The experiments that choose the regime and the learning rates, scored on a validation split held out of the training
#: data: their numbers are never test results (no card shows them).
TUNING_EXPERIMENTS = ("regime", "lr-sweep")
