"""Classification metrics as pure functions on label sequences.

Example:
    >>> accuracy([0, 1, 1, 2], [0, 1, 0, 2])
    0.75
    >>> round(macro_f1([0, 1, 1, 2], [0, 1, 0, 2]), 4)
    0.7778
    >>> normalized_score({"a": 0.9, "b": 0.6}, {"a": 1.0, "b": 0.8})
    82.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modularevo.errors import InputError


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise InputError(
            f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; pass one "
            "prediction per example"
        )
    if not y_true:
        raise InputError("no examples to score: y_true and y_pred are empty")


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of predictions equal to the label.

    Raises:
        InputError: if the sequences differ in length or are empty.
    """
    _check(y_true, y_pred)
    return sum(int(t == p) for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def per_class_f1(
    y_true: Sequence[int], y_pred: Sequence[int], *, labels: Sequence[int] | None = None
) -> dict[int, float]:
    """F1 of each class; a class with no true and no predicted example is left out.

    Args:
        y_true: gold labels.
        y_pred: predicted labels.
        labels: classes to score; default the classes seen in ``y_true`` or ``y_pred``.
            A listed class that never occurs scores 0.

    Raises:
        InputError: if the sequences differ in length or are empty.
    """
    _check(y_true, y_pred)
    classes = sorted(set(y_true) | set(y_pred)) if labels is None else list(labels)
    out: dict[int, float] = {}
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        out[c] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def macro_f1(
    y_true: Sequence[int], y_pred: Sequence[int], *, labels: Sequence[int] | None = None
) -> float:
    """Unweighted mean of the per-class F1 (classes as in :func:`per_class_f1`).

    Raises:
        InputError: if the sequences differ in length or are empty.
    """
    scores = per_class_f1(y_true, y_pred, labels=labels)
    return sum(scores.values()) / len(scores)


def normalized_score(
    merged: Mapping[str, float], individual: Mapping[str, float], *, percent: bool = True
) -> float:
    """Mean over tasks of merged ÷ individually fine-tuned score (METHODS.md §1.3 norm_avg).

    Args:
        merged: task -> score of the merged model.
        individual: task -> score of the model fine-tuned on that task alone.
        percent: multiply by 100, as the paper reports it.

    Raises:
        InputError: if the task sets differ, are empty, or an individual score is 0.
    """
    if set(merged) != set(individual) or not merged:
        raise InputError(
            f"merged scores cover {sorted(merged)} but individual ones cover "
            f"{sorted(individual)}; give both for the same non-empty set of tasks"
        )
    bad = [t for t, s in individual.items() if s <= 0]
    if bad:
        raise InputError(f"individual score of {bad} is <= 0; cannot normalize by it")
    ratio = sum(merged[t] / individual[t] for t in merged) / len(merged)
    return ratio * 100 if percent else ratio
