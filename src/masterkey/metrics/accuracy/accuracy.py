"""Accuracy and top-k accuracy: an ``evaluate`` metric module shipped inside masterkey.

Load it by path, so nothing is fetched from the Hub::

    import evaluate
    from masterkey.training import ACCURACY_METRIC_PATH
    metric = evaluate.load(str(ACCURACY_METRIC_PATH))

``predictions`` are class ids, or rankings of class ids (best first, e.g. ``logits.topk(5).indices``);
``references`` are the true class ids.
"""

import datasets
import evaluate

_DESCRIPTION = """Accuracy is the fraction of examples whose best-ranked class is the true class. Top-k accuracy
(returned when every prediction ranks at least ``top_k`` classes) is the fraction whose true class is among the
``top_k`` best-ranked classes."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted class ids (int), or of rankings of class ids (list of int, best first).
    references: list of true class ids (int).
    top_k: k of the top-k accuracy, reported when every ranking holds at least k class ids. Default 5.
Returns:
    accuracy: float in [0, 1].
    top{k}_accuracy: float in [0, 1], only for rankings of at least k classes.
    num_examples: how many examples were scored.
Examples:
    >>> metric = evaluate.load("path/to/masterkey/metrics/accuracy")
    >>> metric.compute(predictions=[[1, 0], [0, 1]], references=[1, 1], top_k=2)
    {'accuracy': 0.5, 'top2_accuracy': 1.0, 'num_examples': 2}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, top_k=5):
        n = len(references)
        if n == 0:
            return {"accuracy": float("nan"), "num_examples": 0}
        rankings = [p if isinstance(p, (list, tuple)) else [p] for p in predictions]
        if any(len(r) == 0 for r in rankings):
            raise ValueError("Every prediction must rank at least one class.")
        result = {"accuracy": sum(int(r[0] == y) for r, y in zip(rankings, references)) / n}
        if top_k > 1 and all(len(r) >= top_k for r in rankings):
            result[f"top{top_k}_accuracy"] = sum(int(y in r[:top_k]) for r, y in zip(rankings, references)) / n
        result["num_examples"] = n
        return result
