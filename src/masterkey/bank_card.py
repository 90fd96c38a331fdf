"""The model card of a filter bank (:func:`bank_card`): metadata, where the filters came from, a layer summary, a
runnable snippet and the credits, rendered with the one card template (:func:`masterkey.cards.render_card`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .cards import render_card, results_table
from .constants import LIBRARY_NAME

__all__ = ["bank_card"]


def _layer_summary(bank: FilterBank) -> str:  # noqa: F821 - the bank module imports this one
    by_stage: dict[Any, list] = {}
    for spec in bank.specs:
        by_stage.setdefault(spec.stage, []).append(spec)
    lines = [
        f"The bank holds **{len(bank)}** depthwise kernels ({bank.num_parameters:,} parameters).",
        "",
        "| stage | convs | channels | kernel sizes | relative depth |",
        "|---|---|---|---|---|",
    ]
    for stage, specs in by_stage.items():
        sizes = Counter(f"{s.kernel_size[0]}x{s.kernel_size[1]}" for s in specs)
        channels = sorted({s.out_channels for s in specs})
        lines.append(
            f"| {'-' if stage is None else stage} | {len(specs)} | {', '.join(map(str, channels))} | "
            f"{', '.join(f'{k} ({v})' for k, v in sizes.items())} | "
            f"{specs[0].relative_depth:.2f} - {specs[-1].relative_depth:.2f} |"
        )
    return "\n".join(lines)


_USAGE = """```python
import masterkey

bank = masterkey.load_master_filters("{repo_id}")
# inject into a fresh {example_model} and freeze the depthwise kernels; everything else stays trainable
model = masterkey.from_pretrained_filters("{example_model}", bank, num_classes=10{extra_kwargs})
print(model.masterkey_report.parameters)
```"""


_TORCHVISION_USAGE = """```python
import masterkey
import torchvision

bank = masterkey.load_master_filters("{repo_id}")
# inject into a fresh torchvision {builder} and freeze the depthwise kernels; everything else stays trainable
model = masterkey.from_pretrained_filters(torchvision.models.{builder}(num_classes=10), bank)
print(model.masterkey_report.parameters)
```"""


def bank_card(
    bank: FilterBank,  # noqa: F821 - masterkey.bank.FilterBank, which imports this module
    *,
    repo_id: str | None = None,
    title: str | None = None,
    summary: str | None = None,
    results: Sequence[EvalResult] = (),
    sections: Sequence[tuple[str, str]] = (),
    example_model: str | None = None,
    usage: str | None = None,
    results_text: str | None = None,
    credits: Sequence[str] = (),
) -> ModelCard:
    """The model card of a bank: metadata (``library_name: masterkey``, licence, tags, ``base_model`` for a bank of a
    Hub checkpoint, ``model-index`` eval results when given), where the filters came from (checkpoint, commit, tag,
    licence), a layer summary, a runnable snippet (``usage`` replaces it), results (``results_text`` replaces their
    plain table) and extra ``sections``, and credits. ``FilterBank.save_pretrained`` writes it; its keyword arguments come from
    ``save_pretrained(..., model_card_kwargs=...)``.

    Example:
        >>> card = bank_card(bank, repo_id="org/lite0-imagenet-dw")
        >>> card.save("README.md")
    """
    cfg = bank.config
    source_model = cfg.get("source_model") or "unknown"
    repo_id = repo_id or f"your-org/{source_model}-dw"
    results = list(results)
    licence = _license_id(cfg.get("source_license"))
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=licence,
        # an unlisted licence keeps its own name (the bank's licence follows its weights')
        license_name=str(cfg["source_license"]).strip().lower().replace(" ", "-") if licence == "other" else None,
        base_model=cfg.get("source_hub_id"),
        tags=["masterkey", "depthwise-filters", "filter-bank", "image-classification", "timm"],
        datasets=[cfg["source_dataset"]] if cfg.get("source_dataset") else None,
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )
    hub_id = cfg.get("source_hub_id")
    library = cfg.get("source_library")  # banks from before it was recorded came from timm
    source_rows = [
        (f"source architecture ({library or 'timm'})", f"`{source_model}`"),
        *([("source class", f"`{cfg['source_class']}`")] if cfg.get("source_class") else []),
        ("source weights", cfg.get("source_weights") or "not recorded"),
        *([("SHA-256 of the weights file", f"`{cfg['source_sha256']}`")] if cfg.get("source_sha256") else []),
        *([("checkpoint on the Hub", f"[`{hub_id}`](https://huggingface.co/{hub_id})")] if hub_id else []),
        *([("commit of the weights", f"`{cfg['source_revision']}`")] if cfg.get("source_revision") else []),
        *([(f"pretrained tag ({library or 'timm'})", f"`{cfg['source_tag']}`")] if cfg.get("source_tag") else []),
        ("training dataset", cfg.get("source_dataset") or "not recorded"),
        ("licence of the weights", cfg.get("source_license") or "not recorded"),
        *[(f"{name} version", cfg[f"{name}_version"]) for name in ("timm", "torchvision", "transformers")
          if cfg.get(f"{name}_version")],
        ("kernel sizes", ", ".join(f"{h}x{w}" for h, w in bank.kernel_sizes)),
        ("format version", str(cfg.get("format_version"))),
    ]
    source_table = "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in source_rows)])
    # the snippet injects into a fresh model of the source architecture where one can be named: a timm name or a
    # torchvision builder; a bank of any other model goes into a timm model by depth
    builder = cfg.get("source_builder") if library == "torchvision" and example_model is None else None
    timm_source = library in (None, "timm") and source_model != "unknown"
    same_shapes = example_model is None and timm_source
    example_model = example_model or (source_model if timm_source else "convnext_atto")
    usage = usage or (_TORCHVISION_USAGE.format(repo_id=repo_id, builder=builder) if builder else "") or _USAGE.format(
        repo_id=repo_id, example_model=example_model, extra_kwargs="" if same_shapes else ', mapping="depth"'
    )
    return render_card(
        card_data,
        title=title or f"Master-key depthwise filters of {source_model}",
        summary=summary or cfg.get("description") or f"The depthwise convolution kernels of `{source_model}`, "
        "packaged as a masterkey filter bank: frozen, they serve as general-purpose spatial filters for another "
        "dataset (the Master Key Filters Hypothesis).",
        sections=[
            ("Where the filters come from", f"{source_table}\n\n{_layer_summary(bank)}"),
            ("How to use", usage),
            ("Results", results_text or (results_table(results) if results else "")),
            *sections,
        ],
        credits=credits,
        footer=f"Built with [masterkey](https://github.com/masterkey-filters/masterkey) ({LIBRARY_NAME}).",
    )


def _license_id(text: str | None) -> str | None:
    """The Hub licence identifier for a free-text licence when it is a known one (``Apache-2.0`` -> ``apache-2.0``)."""
    if not text:
        return None
    known = {"apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "cc-by-nc-4.0", "other"}
    ident = text.strip().lower().split()[0]
    return ident if ident in known else "other"
