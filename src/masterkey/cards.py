"""The one model-card template every masterkey card is rendered with: filter banks (:func:`masterkey.bank.bank_card`),
trained models (``masterkey.training.outputs.transfer_card``) and the published banks (:mod:`masterkey.publishing`).

A card is front matter (``huggingface_hub.ModelCardData``), a title, a summary, Markdown sections in order, the
credits (the three papers always last) and a footer line.
"""

from __future__ import annotations

from collections.abc import Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .constants import CITATION_MASTER_KEY, CITATION_SCALE_SPACE, CITATION_UNIVERSAL

__all__ = ["render_card", "results_table", "PAPER_CREDITS"]

#: Cited at the end of every card.
PAPER_CREDITS = (CITATION_MASTER_KEY, CITATION_UNIVERSAL, CITATION_SCALE_SPACE)

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

{% for section_title, body in sections %}## {{ section_title }}

{{ body }}

{% endfor %}## Credits

{{ credits }}

{{ footer }}
"""


def render_card(
    card_data: ModelCardData,
    *,
    title: str,
    summary: str,
    sections: Sequence[tuple[str, str]],
    credits: Sequence[str] = (),
    footer: str,
) -> ModelCard:
    """A ``huggingface_hub.ModelCard``: front matter from ``card_data``, ``# title``, ``summary``, each
    ``(title, body)`` of ``sections`` as a ``##`` section, a ``## Credits`` list (``credits``, then the papers) and
    ``footer``.

    Example:
        >>> card = render_card(ModelCardData(library_name="masterkey"), title="A bank", summary="Filters.",
        ...                    sections=[("How to use", "...")], footer="Built with masterkey.")
        >>> card.save("README.md")
    """
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=title,
        summary=summary,
        sections=[(t, b) for t, b in sections if b],
        credits="\n".join(f"- {c}" for c in [*credits, *PAPER_CREDITS]),
        footer=footer,
    )


def results_table(results: Sequence[EvalResult]) -> str:
    """Markdown table of eval results: dataset, metric, value, and the source of each.

    Example:
        >>> from huggingface_hub import EvalResult
        >>> print(results_table([EvalResult(task_type="image-classification", dataset_type="animal-mnist",
        ...                                 dataset_name="Animal-MNIST", metric_type="accuracy", metric_value=0.97)]))
        | dataset | metric | value | source |
        |---|---|---|---|
        | Animal-MNIST | accuracy | 0.97 |  |
    """
    lines = ["| dataset | metric | value | source |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.dataset_name} | {r.metric_name or r.metric_type} | {r.metric_value} | {r.source_name or ''} |"
        )
    return "\n".join(lines)
