"""Evaluation: pure classification metrics and evaluation of a model on a split."""

from modularevo.evaluation.evaluate import evaluate_model, score_split
from modularevo.evaluation.metrics import (
    accuracy,
    macro_f1,
    normalized_score,
    per_class_f1,
)

__all__ = [
    "accuracy",
    "evaluate_model",
    "macro_f1",
    "normalized_score",
    "per_class_f1",
    "score_split",
]
