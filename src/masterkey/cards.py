"""Model cards for filter banks, built with ``huggingface_hub``'s ``ModelCard`` and ``ModelCardData``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .constants import CITATION_MASTER_KEY, CITATION_SCALE_SPACE, CITATION_UNIVERSAL, LIBRARY_NAME
from .errors import BankFormatError

if TYPE_CHECKING:
    from .bank import FilterBank

__all__ = ["bank_card", "results_table", "load_card_results", "experiment_card_results"]

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## Where the filters come from

| | |
|---|---|
{% for key, value in source_rows %}| {{ key }} | {{ value }} |
{% endfor %}

{{ layers }}

## How to use

```python
import masterkey

bank = masterkey.load_master_filters("{{ repo_id }}")
# inject into a fresh {{ example_model }} and freeze the depthwise kernels; everything else stays trainable
model = masterkey.from_pretrained_filters("{{ example_model }}", bank, num_classes=10{{ extra_kwargs }})
print(model.masterkey_report.parameters)
```

{% if results %}## Results

{{ results }}
{% endif %}{% for title, body in sections %}## {{ title }}

{{ body }}

{% endfor %}## Credits

{{ credits }}

Built with [masterkey](https://github.com/masterkey-filters/masterkey) ({{ library_name }}).
"""


def results_table(results: Sequence[EvalResult]) -> str:
    """Markdown table of eval results: dataset, metric, value, and the source of each."""
    lines = ["| dataset | metric | value | source |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.dataset_name} | {r.metric_name or r.metric_type} | {r.metric_value} | {r.source_name or ''} |"
        )
    return "\n".join(lines)


def load_card_results(path: str | Path) -> tuple[list[EvalResult], list[tuple[str, str]]]:
    """Read a card results file: ``{"results": [EvalResult fields...], "sections": [{"title", "body"}...]}``.

    Each result row holds ``huggingface_hub.EvalResult`` keyword arguments (``task_type``, ``dataset_type``,
    ``dataset_name``, ``metric_type``, ``metric_value``, and optionally ``source_name``, ``dataset_split``, ...);
    sections are extra Markdown sections (tables, plots, the commands that reproduce them).

    Example:
        >>> results, sections = load_card_results("outputs/experiments/card_results.json")
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        results = [EvalResult(**row) for row in data.get("results", [])]
        sections = [(s["title"], s["body"]) for s in data.get("sections", [])]
    except (OSError, json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise BankFormatError(
            f"Cannot read card results from {path}: {e!r}. Expected JSON with 'results' (EvalResult fields) and "
            "optional 'sections' ({'title', 'body'})."
        ) from None
    return results, sections


def experiment_card_results(
    experiments_dir: str | Path, filters: str
) -> tuple[list[EvalResult], list[tuple[str, str]]]:
    """The card rows of one bank from the experiments' ``results.json`` files under ``experiments_dir``.

    ``filters`` is the ``--filters`` spec the experiments trained with (``"imagenet-lite0"``, a bank folder, ...).
    Every experiment cell that used it becomes an ``EvalResult`` (accuracy, mean over seeds); every experiment that
    used it adds a section with its whole table (so the bank is seen beside training from scratch), the scale and
    the command that reproduces it.

    Example:
        >>> results, sections = experiment_card_results("outputs/experiments", "imagenet-lite0")
    """
    results, sections = [], []
    for path in sorted(Path(experiments_dir).glob("*/results.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [r for r in data["summary"] if r["filters"] == filters]
        for r in rows:
            results.append(
                EvalResult(
                    task_type="image-classification",
                    dataset_type=r["dataset"],
                    dataset_name=r["dataset"],
                    dataset_split="test",
                    metric_type="accuracy",
                    metric_value=round(r["mean"], 4),
                    metric_name=f"accuracy, {r['model']}, {r['label']}, mean of {r['n']} seeds",
                )
            )
        if rows:
            scale = data["scale"]
            sections.append((
                f"Experiment: {data['experiment']}",
                "\n".join(data["table"]) + f"\n\nScale `{scale['name']}`: {len(scale['seeds'])} seeds, "
                f"{scale['resolution']}px, wall time {data['wall_time_s'] / 60:.1f} min. Reproduce with "
                f"`{data['command']}`.",
            ))  # fmt: skip
    return results, sections


def _layer_summary(bank: FilterBank) -> str:
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


def bank_card(
    bank: FilterBank,
    *,
    repo_id: str | None = None,
    title: str | None = None,
    summary: str | None = None,
    results: Sequence[EvalResult] = (),
    sections: Sequence[tuple[str, str]] = (),
    example_model: str | None = None,
    credits: Sequence[str] = (),
) -> ModelCard:
    """The model card of a bank: metadata (``library_name: masterkey``, licence, tags, ``model-index`` eval results
    when given), where the filters came from, a layer summary, a runnable snippet and credits.

    Example:
        >>> card = bank_card(bank, repo_id="org/lite0-imagenet-dw")
        >>> card.save("README.md")
    """
    cfg = bank.config
    source_model = cfg.get("source_model") or "unknown"
    repo_id = repo_id or f"your-org/{source_model}-dw"
    results = list(results)
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=_license_id(cfg.get("source_license")),
        tags=["masterkey", "depthwise-filters", "filter-bank", "image-classification", "timm"],
        datasets=[cfg["source_dataset"]] if cfg.get("source_dataset") else None,
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )
    source_rows = [
        ("source architecture (timm)", f"`{source_model}`"),
        ("source weights", cfg.get("source_weights") or "not recorded"),
        ("training dataset", cfg.get("source_dataset") or "not recorded"),
        ("licence of the weights", cfg.get("source_license") or "not recorded"),
        ("kernel sizes", ", ".join(f"{h}x{w}" for h, w in bank.kernel_sizes)),
        ("format version", str(cfg.get("format_version"))),
    ]
    same_shapes = example_model is None
    example_model = example_model or (source_model if source_model != "unknown" else "convnext_atto")
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=title or f"Master-key depthwise filters of {source_model}",
        summary=summary or cfg.get("description") or f"The depthwise convolution kernels of `{source_model}`, "
        "packaged as a masterkey filter bank: frozen, they serve as general-purpose spatial filters for another "
        "dataset (the Master Key Filters Hypothesis).",
        source_rows=source_rows,
        layers=_layer_summary(bank),
        repo_id=repo_id,
        example_model=example_model,
        extra_kwargs="" if same_shapes else ', mapping="depth"',
        results=results_table(results) if results else "",
        sections=list(sections),
        credits="\n".join(f"- {c}" for c in [*credits, CITATION_MASTER_KEY, CITATION_UNIVERSAL, CITATION_SCALE_SPACE]),
        library_name=LIBRARY_NAME,
    )


def _license_id(text: str | None) -> str | None:
    """The Hub licence identifier for a free-text licence when it is a known one (``Apache-2.0`` -> ``apache-2.0``)."""
    if not text:
        return None
    known = {"apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "cc-by-nc-4.0", "other"}
    ident = text.strip().lower().split()[0]
    return ident if ident in known else "other"
