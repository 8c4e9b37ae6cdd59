"""Answer-quality metrics that work for any script."""

from __future__ import annotations

from collections import Counter

from alambic.text import words


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style bag-of-words F1, with case and diacritics ignored (so it works for Arabic too)."""
    predicted, expected = words(prediction), words(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)
