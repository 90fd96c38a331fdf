"""What a transfer run leaves in ``--output_dir``, and the checks that keep runs from mixing.

A finished run folder holds:

- ``model.safetensors`` and ``config.json`` in the layout timm's Hub helpers write (``timm.models.save_for_hf``),
  adjusted so that the folder loads both with ``timm.create_model("local-dir:<dir>", pretrained=True)`` and with
  transformers' ``pipeline("image-classification", model=<dir>)``: the wrapper passes ``num_classes`` itself, so
  ``model_args`` must not (``KeyError: 'num_classes'`` otherwise); label names and the evaluation preprocessing
  (input size, crop, mean/std) are in the config;
- ``README.md``: a model card whose metadata carries the results as ``model-index`` eval results, and whose text
  says which filters were frozen and where they came from;
- ``results.json``: final and per-epoch metrics, parameter counts, timings, the full configuration, versions;
- ``run_config.json`` (written when the run starts: the folder belongs to that run), ``checkpoints/`` when
  ``--checkpointing_steps`` is set (the newest ``--checkpoints_total_limit`` of them when that is set), ``logs/`` with ``--with_tracking``, ``sample_ids.jsonl`` with
  ``--log_sample_ids``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from collections.abc import Collection, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import models
from ..cards import render_card, results_table
from ..constants import LIBRARY_VERSION
from ..errors import TrainingConfigError
from ..names import canonical_filters
from .config import CARD_KEYS, IDENTITY_ADDED_SINCE

__all__ = [
    "RESULTS_NAME",
    "RUN_CONFIG_NAME",
    "CHECKPOINTS_DIR",
    "STATE_NAME",
    "COMPARISON_NAME",
    "PUSH_IGNORE_PATTERNS",
    "PUSH_COMMIT_MESSAGE",
    "same_run",
    "check_output_dir",
    "claim_output_dir",
    "finished_run",
    "find_checkpoint",
    "read_checkpoint_state",
    "complete_checkpoints",
    "prune_checkpoints",
    "save_model",
    "write_json",
    "transfer_card",
    "library_versions",
]

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
RUN_CONFIG_NAME = "run_config.json"
CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "masterkey_state.json"
COMPARISON_NAME = "comparison.json"
WEIGHTS_NAME = "model.safetensors"  # the trained network, as timm's Hub helpers name it
#: Everything a run writes into its folder; ``--overwrite_output_dir`` removes these and nothing else.
RUN_ARTIFACTS = (
    RESULTS_NAME,
    RUN_CONFIG_NAME,
    CHECKPOINTS_DIR,
    WEIGHTS_NAME,
    "config.json",
    "README.md",
    "logs",
    "sample_ids.jsonl",
    COMPARISON_NAME,
)
#: What ``--push_to_hub`` leaves out of the upload (given to :func:`masterkey.hub.push_folder`): the model folder
#: goes up, the run's bookkeeping does not.
PUSH_IGNORE_PATTERNS = (f"{CHECKPOINTS_DIR}/**", "logs/**", "sample_ids.jsonl", "*.tmp", RUN_CONFIG_NAME)
PUSH_COMMIT_MESSAGE = "masterkey transfer run"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a half-written results file never exists).

    Example:
        >>> write_json(Path("outputs/run/results.json"), {"accuracy": 0.97})
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _as_json(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` as it reads back from JSON (tuples become lists, paths strings), so that a configuration in
    memory compares equal to the same configuration written to disk."""
    return json.loads(json.dumps(dict(identity), default=_jsonable))


def same_run(saved: Any, identity: Mapping[str, Any], *, ignore: Collection[str] = ()) -> bool:
    """Whether ``saved`` (a run configuration read from JSON: ``run_config.json``, a checkpoint's identity) is the
    configuration ``identity``, the keys in ``ignore`` aside. The one comparison behind every reuse of a folder or a
    checkpoint.

    Example:
        >>> same_run({"crop_scale": [0.5, 1.0]}, {"crop_scale": (0.5, 1.0)})
        True
    """
    if not isinstance(saved, Mapping):
        return False
    saved = {**{k: v for k, v in IDENTITY_ADDED_SINCE.items() if k in identity}, **saved}  # older files lack them

    def comparable(config: Mapping[str, Any]) -> dict[str, Any]:  # a deprecated filters spelling is the same run
        return {k: canonical_filters(v) if k == "filters" else v for k, v in _as_json(config).items() if k not in ignore}

    return comparable(saved) == comparable(identity)


def _differences(want: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """``key: value there, value now`` for each differing key (compared as JSON), keys known on both sides first."""
    want, got = _as_json(want), _as_json(got)
    keys = sorted(set(want) | set(got), key=lambda k: (k not in want or k not in got, k))
    return [f"{k}: {got.get(k)!r} there, {want.get(k)!r} now" for k in keys if want.get(k) != got.get(k)]


# -- output folder ---------------------------------------------------------------------------------------------------
def check_output_dir(output_dir: Path, identity: Mapping[str, Any], *, overwrite: bool, resume: str | None,
                     checkpoint: Path | None) -> bool:  # fmt: skip
    """Refuse an output folder that holds another run, unless ``overwrite``; returns whether to clear it first.

    A folder belongs to a run once it holds ``run_config.json`` or ``results.json``. It may be used again when
    resuming from one of its checkpoints (whose configuration :func:`find_checkpoint` checked), or with
    ``--resume_from_checkpoint latest`` when it holds an unfinished run of the same configuration that saved no
    checkpoint yet (it starts over).

    Example:
        >>> clear = check_output_dir(Path("outputs/run"), identity, overwrite=False, resume=None, checkpoint=None)
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingConfigError(f"--output_dir {str(output_dir)!r} is a file, not a folder.")
    taken = [n for n in (RESULTS_NAME, RUN_CONFIG_NAME) if (output_dir / n).exists()]
    if not taken or checkpoint is not None:
        return False
    if overwrite:
        return True
    previous = _read_json(output_dir / RUN_CONFIG_NAME) or {}
    if resume == "latest" and RESULTS_NAME not in taken and same_run(previous, identity):
        return True
    hint = ""
    if isinstance(previous, Mapping) and previous and not same_run(previous, identity):
        hint = f" Its configuration differs: {'; '.join(_differences(identity, previous)[:6])}."
    raise TrainingConfigError(
        f"The output folder {str(output_dir)!r} holds another run's results ({', '.join(taken)}).{hint} Pass "
        "--overwrite_output_dir to replace them, another --output_dir, or --resume_from_checkpoint to continue it."
    )


def finished_run(output_dir: Path, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``results.json`` of a run that finished in ``output_dir`` with this configuration (``identity``, from
    :func:`masterkey.training.config.run_identity`; the process count aside), or ``None``: lets a grid of runs that
    was interrupted continue where it stopped.

    Example:
        >>> finished_run(Path("outputs/grid/run-3"), run_identity(make_config(dataset_name="digits")))
    """
    results, previous = _read_json(output_dir / RESULTS_NAME), _read_json(output_dir / RUN_CONFIG_NAME)
    if not isinstance(results, dict):
        return None
    return results if same_run(previous, identity, ignore=("num_processes",)) else None


def claim_output_dir(output_dir: Path, identity: Mapping[str, Any], *, clear: bool) -> None:
    """Make ``output_dir`` this run's folder: remove the previous run's files when ``clear``, write
    ``run_config.json``. Main process only.

    Example:
        >>> claim_output_dir(Path("outputs/run"), identity, clear=False)  # writes outputs/run/run_config.json
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if clear:
        for name in RUN_ARTIFACTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    write_json(output_dir / RUN_CONFIG_NAME, dict(identity))


# -- checkpoints -----------------------------------------------------------------------------------------------------
def _checkpoint_order(path: Path) -> tuple[int, int]:
    state = _read_json(path / STATE_NAME)
    steps = state.get("completed_steps") if isinstance(state, dict) else None
    return (steps if isinstance(steps, int) else -1), int(path.stat().st_mtime_ns)


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in ``folder`` (those holding their state file; a ``.tmp`` folder, still being written
    or left by a kill, never counts), oldest first: by completed steps, then by time written.

    Example:
        >>> [p.name for p in complete_checkpoints(Path("run/checkpoints"))]
        ['step_10', 'step_20']
    """
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if not p.name.endswith(".tmp") and (p / STATE_NAME).is_file()]
    return sorted(found, key=_checkpoint_order)


def prune_checkpoints(folder: Path, *, total_limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the oldest complete checkpoints in ``folder`` until at most ``total_limit`` remain (as
    ``--checkpoints_total_limit``, like transformers' ``save_total_limit``); ``keep`` (the checkpoint just written)
    and ``.tmp`` folders are never deleted. Returns the deleted folders. Main process only.

    Example:
        >>> prune_checkpoints(Path("run/checkpoints"), total_limit=2, keep=Path("run/checkpoints/step_30"))
        [PosixPath('run/checkpoints/step_10')]
    """
    if total_limit < 1:
        raise TrainingConfigError(f"--checkpoints_total_limit must be a positive integer, got {total_limit!r}.")
    checkpoints = complete_checkpoints(folder)
    keep_resolved = None if keep is None else keep.resolve()
    deletable = [p for p in checkpoints if p.resolve() != keep_resolved]
    excess = len(checkpoints) - total_limit
    deleted = deletable[: max(0, excess)]
    for path in deleted:
        shutil.rmtree(path)
    if deleted:
        logger.debug("deleted checkpoints %s (--checkpoints_total_limit %d)", [p.name for p in deleted], total_limit)
    return deleted


def find_checkpoint(resume: str | None, output_dir: Path, identity: Mapping[str, Any]) -> Path | None:
    """The checkpoint folder ``--resume_from_checkpoint`` names (a path, or ``latest``: the most advanced complete
    checkpoint in ``output_dir/checkpoints``, ``None`` when there is none yet), checked against this run's
    configuration.

    Raises:
        TrainingConfigError: the path does not exist, is not a masterkey checkpoint, or belongs to a run with
            another configuration (the differences are listed).

    Example:
        >>> find_checkpoint("latest", Path("outputs/run"), identity)
        PosixPath('outputs/run/checkpoints/epoch_3')
    """
    if resume is None:
        return None
    if resume == "latest":
        folder = output_dir / CHECKPOINTS_DIR
        found = complete_checkpoints(folder)
        if not found:
            return None
        path = found[-1]
    else:
        path = Path(resume)
        if not path.is_dir():
            raise TrainingConfigError(f"--resume_from_checkpoint {resume!r} does not exist (or is not a folder).")
    state = _read_json(path / STATE_NAME)
    if not isinstance(state, dict) or "identity" not in state:
        raise TrainingConfigError(
            f"{str(path)!r} is not a complete masterkey checkpoint (no {STATE_NAME}); checkpoints are the step_* and "
            f"epoch_* folders under <output_dir>/{CHECKPOINTS_DIR}."
        )
    if not same_run(state["identity"], identity):
        raise TrainingConfigError(
            f"The checkpoint {str(path)!r} belongs to a run with another configuration: "
            f"{'; '.join(_differences(identity, state['identity']))}. Resume with the same arguments, or start a new "
            "run without --resume_from_checkpoint."
        )
    return path


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The training state a checkpoint folder recorded beside its weights (its epoch, step and configuration).

    Example:
        >>> state = read_checkpoint_state(Path("outputs/run/checkpoints/epoch_4"))  # saved after the fifth epoch
        >>> state["epoch"], state["batches_in_epoch"]  # where training continues
        (5, 0)
    """
    return json.loads((path / STATE_NAME).read_text())


# -- model folder ----------------------------------------------------------------------------------------------------
def save_model(model, output_dir: Path, *, label_names: Sequence[str], data_config: Mapping[str, Any]) -> None:
    """Save the trained model in timm's Hub layout (:func:`masterkey.models.save_model`, the card written apart, with
    the results), loadable by ``timm.create_model("local-dir:...", pretrained=True)`` and transformers' pipeline.

    Example:
        >>> save_model(model, Path("outputs/run"), label_names=["cat", "dog"], data_config=data_config)
    """
    models.save_model(model, output_dir, label_names=label_names, data_config=data_config, card=False)


# -- model card ------------------------------------------------------------------------------------------------------

_FOOTER = "Trained with [masterkey](https://github.com/masterkey-filters/masterkey)'s `examples/transfer.py`."


def transfer_card(results: Mapping[str, Any], *, repo_id: str | None = None) -> ModelCard:
    """The model card of a trained model (``huggingface_hub.ModelCard``), from its ``results.json`` content: the
    results as ``model-index`` metadata and a table, the dataset, the frozen filters and where they came from, how to
    load the model, and the training configuration (the :data:`~masterkey.training.config.CARD_KEYS` fields).

    Example:
        >>> transfer_card(json.loads(Path("run/results.json").read_text())).save("run/README.md")
    """
    data, final, cfg, filters = results["dataset"], results["final"], results["config"], results["filters"]
    common = {
        "task_type": "image-classification",
        "task_name": "Image Classification",
        "dataset_type": data["id"],
        "dataset_name": data["name"],
        "dataset_split": data["eval_split"],
        "dataset_config": cfg.get("dataset_config_name"),
    }
    # rounded as the tables are: a card reports a measurement, not float noise
    evals = [EvalResult(metric_type="accuracy", metric_name="Accuracy", metric_value=round(final["accuracy"], 4),
                        **common)]  # fmt: skip
    if final.get("top5_accuracy") is not None:
        evals.append(
            EvalResult(metric_type="top_5_accuracy", metric_name="Top-5 accuracy",
                       metric_value=round(final["top5_accuracy"], 4), **common)  # fmt: skip
        )
    name = repo_id.split("/")[-1] if repo_id else Path(results["output_dir"]).name
    body = filters.get("body") or {}
    licence, licence_text = _licence(results)
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        license=licence,
        license_name="see-card" if licence == "other" else None,
        base_model=body.get("source_hub_id"),
        tags=["masterkey", "image-classification", "timm", "depthwise-filters", "transfer-learning"],
        datasets=[data["id"]] if data.get("hub") else None,
        model_name=name,
        eval_results=evals,
    )
    params = results["parameters"]
    training_line = (
        f"`{results['model']}` trained for {results['completed_steps']} steps ({results['epochs']} epochs) on "
        f"{data['num_train']:,} images at {results['resolution']} px and evaluated on {data['num_eval']:,}; "
        f"{params['trainable']:,} of {params['total']:,} parameters trainable ({params['trainable_percent']:.2f}%); "
        f"{results['train_samples_per_second']:.1f} training samples/s on {results['num_processes']} x "
        f"{results['device']}."
    )
    dataset_line = (
        f"{data['description']} From {data['source']}; licence {data['license']}." if data.get("description") else ""
    )
    if body:
        training_line += (
            f" The body started from the pretrained weights `{body.get('source_weights')}` (licence "
            f"{body.get('source_license') or 'not recorded'})."
        )
    config_rows = [(k, f"`{cfg[k]}`") for k in CARD_KEYS if cfg.get(k) is not None]
    config_rows.append(("processes", str(results["num_processes"])))
    configuration = (
        "| argument | value |\n|---|---|\n"
        + "".join(f"| {key} | {value} |\n" for key, value in config_rows)
        + f"\n\nLibrary versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}."
    )
    # the folder this card is in, wherever it was copied to: never the absolute path of the machine that trained it
    location = repo_id or f"./{Path(results['output_dir']).name}"
    labels = ", ".join(data["label_names"][:50]) + (" ..." if data["num_labels"] > 50 else "")
    snippet = models.how_to_use(timm_name=f"hf-hub:{repo_id}" if repo_id else f"local-dir:{location}",
                                pipeline_name=location)  # fmt: skip
    how_to_use = f"{snippet}\n\nClasses ({data['num_labels']}): {labels}."
    final_line = f"accuracy {final['accuracy']:.4f}" + (
        f", top-5 {final['top5_accuracy']:.4f}" if final.get("top5_accuracy") is not None else ""
    )
    source = (
        ("fine-tuned from pretrained weights, every weight trained" if body else "trained from scratch")
        if filters.get("scratch")
        else f"with the frozen master-key filters `{filters['spec']}`"
    )
    return render_card(
        card_data,
        title=f"{results['model']} on {data['name']}, {'from scratch' if filters.get('scratch') else filters['spec']}",
        summary=f"A `{results['model']}` image classifier for {data['name']}, {data['num_labels']} classes, "
        f"{source}: {final_line} on the {data['eval_split']} split.",
        sections=[
            ("Results", f"{results_table(evals)}\n\n{training_line}"),
            ("Dataset", dataset_line),  # left out when empty (a dataset that is not built in)
            ("Frozen filters", _filters_section(filters, cfg)),
            ("How to use", how_to_use),
            ("Training configuration", configuration),
            ("Licence", licence_text),
        ],
        footer=_FOOTER,
    )


#: Hub licence identifiers masterkey recognises in free-text licences (``Apache-2.0`` -> ``apache-2.0``).
_KNOWN_LICENCES = {"apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "cc-by-nc-4.0", "cc-by-sa-4.0"}


def _licence(results: Mapping[str, Any]) -> tuple[str, str]:
    """The model's licence (Hub identifier) and a sentence saying where it comes from: the licences of what it was
    made from (training data, frozen filters, pretrained body); one identifier when they agree, ``other`` when not."""
    filters, data = results["filters"], results["dataset"]
    parts = {
        "training data": data.get("license"),
        "frozen filters": (filters.get("provenance") or {}).get("source_license"),
        "pretrained body": (filters.get("body") or {}).get("source_license"),
    }
    known = {what: str(text) for what, text in parts.items() if text}
    ids = {text.strip().lower().split()[0] for text in known.values()}
    ids = {i if i in _KNOWN_LICENCES else "other" for i in ids}
    licence = ids.pop() if len(ids) == 1 else "other"
    if not known:
        return "other", "Not recorded: the training data, filters and body stated no licence. Check them before use."
    listed = "; ".join(f"{what}: {text}" for what, text in known.items())
    verdict = f"`{licence}`" if licence != "other" else "stated as `other`: they differ, and all of them apply"
    return licence, f"This model is made from material under these licences ({listed}); {verdict}."


def _filters_section(filters: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    """Which depthwise convs hold which bank entry, and where the bank came from (or: trained from scratch)."""
    if filters.get("scratch"):
        return (
            "None: this model was trained from scratch (`--filters none`), every depthwise convolution included. "
            "It is the baseline for the master-key runs."
        )
    state = "frozen" if filters["frozen"] else "injected but trained further (`--no_freeze`)"
    provenance = filters["provenance"]
    rows = [
        ("filters", f"`{filters['spec']}`"),
        ("bank", provenance.get("bank", "")),
        ("source model", f"`{provenance['source_model']}`" if provenance.get("source_model") else "not recorded"),
        ("source weights", provenance.get("source_weights", "not recorded")),
        ("source dataset", provenance.get("source_dataset", "not recorded")),
        ("licence of the source", provenance.get("source_license", "not recorded")),
    ]
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    convs = "\n".join(
        ["| depthwise conv | bank entry | kernel | transforms |", "|---|---|---|---|"]
        + [f"| `{e['target']}` | `{e['source']}` | {e['kernel']} | {', '.join(e['transforms'])} |"
           for e in filters["injected"]]  # fmt: skip
    )
    untouched = (
        f"\n\n{len(filters['untouched'])} depthwise convs had no fitting bank entry and were trained: "
        + ", ".join(f"`{t}`" for t in filters["untouched"])
        if filters["untouched"]
        else ""
    )
    return (
        f"{len(filters['injected'])} of {filters['num_depthwise']} depthwise convolutions hold filters from "
        f"`{filters['spec']}`, {state} during training (`--trainable {cfg['trainable']}`).\n\n{table}\n\n"
        f"{convs}{untouched}"
    )


# -- misc ------------------------------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    """The versions of masterkey, Python and the libraries a run depends on, for ``results.json`` and the card.

    Example:
        >>> sorted(library_versions())[:3]
        ['accelerate', 'datasets', 'evaluate']
    """
    versions = {"masterkey": LIBRARY_VERSION, "python": platform.python_version()}
    for name in ("torch", "timm", "accelerate", "datasets", "evaluate", "transformers", "huggingface-hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
