"""Uncertainty of accuracies and of paired differences between models scored on the same examples.

* :func:`wilson_interval`: 95% interval of one accuracy (scipy's Wilson score interval).
* :func:`mcnemar`: exact McNemar test of two models on one task (scipy's binomial test
  on the discordant pairs).
* :func:`holm`: Holm's step-down correction of a family of p-values.
* :func:`bootstrap_averages` + :func:`paired_difference`: a paired bootstrap stratified
  by task. Every draw resamples each task's examples with replacement (the same indices
  for every model, which keeps the pairing), and recomputes each model's absolute average
  (mean over tasks of accuracy) and normalized average (mean over tasks of accuracy ÷ a
  reference model's accuracy on the same draw). The interval of a difference is the
  percentile interval of its draws; its p-value is two-sided, ``2·min(P(Δ ≤ 0), P(Δ ≥ 0))``.

Example:
    >>> lo, hi = wilson_interval(80, 100)
    >>> round(lo, 3), round(hi, 3)
    (0.711, 0.867)
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95

# model -> task -> per-example correctness (bool array, the same examples for every model)
Correctness = Mapping[str, Mapping[str, np.ndarray]]


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``(nan, nan)`` when n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar test: do models a and b err on the same examples at the same rate?

    Args:
        correct_a, correct_b: per-example correctness of a and b on the same examples.

    Returns:
        ``a_only`` (a right, b wrong), ``b_only`` and the two-sided exact ``p`` (1 when
        there is no discordant pair).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar needs the same examples: shapes {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0
    if a_only + b_only:
        from scipy.stats import binomtest

        p = float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given); reject where adjusted p < α."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class BootstrapAverages:
    """Bootstrap draws of each model's averages over tasks (percent).

    Attributes:
        abs_avg: model -> (B,) draws of the mean accuracy over tasks.
        norm_avg: model -> (B,) draws of the mean of accuracy ÷ reference accuracy (or
            absent without a reference).
        estimate_abs, estimate_norm: the same statistics on the data itself.
        samples: B.
    """

    abs_avg: dict[str, np.ndarray]
    norm_avg: dict[str, np.ndarray]
    estimate_abs: dict[str, float]
    estimate_norm: dict[str, float]
    samples: int


def bootstrap_averages(
    correct: Correctness,
    tasks: Sequence[str],
    *,
    reference: str | None = None,
    samples: int = 2000,
    seed: int = 0,
) -> BootstrapAverages:
    """Paired bootstrap, stratified by task, of every model's absolute and normalized average.

    Args:
        correct: model -> task -> per-example correctness; every model has every task,
            on the same examples.
        tasks: the tasks averaged over.
        reference: the model whose accuracy normalizes (``single_task``), or ``None``.
        samples: bootstrap draws B.
        seed: seed of the draws.
    """
    rng = np.random.default_rng(seed)
    models = list(correct)
    acc_draws: dict[str, list[np.ndarray]] = {m: [] for m in models}
    acc_point: dict[str, list[float]] = {m: [] for m in models}
    for task in tasks:
        n = len(correct[models[0]][task])
        idx = rng.integers(0, n, size=(samples, n))  # (B, n): the same draw for every model
        for m in models:
            c = np.asarray(correct[m][task], dtype=np.float64)
            if len(c) != n:
                raise ValueError(f"{m!r} has {len(c)} examples of {task!r}, expected {n}")
            acc_draws[m].append(c[idx].mean(axis=1))
            acc_point[m].append(float(c.mean()))
    abs_avg = {m: 100 * np.mean(acc_draws[m], axis=0) for m in models}
    est_abs = {m: 100 * float(np.mean(acc_point[m])) for m in models}
    norm_avg: dict[str, np.ndarray] = {}
    est_norm: dict[str, float] = {}
    # the normalized average is undefined when the reference scores 0 on a task
    if reference is not None and reference in correct and min(acc_point[reference]) > 0:
        ref_d = [np.maximum(d, 1e-12) for d in acc_draws[reference]]
        ref_p = [max(p, 1e-12) for p in acc_point[reference]]
        for m in models:
            ratios = [d / r for d, r in zip(acc_draws[m], ref_d, strict=True)]
            norm_avg[m] = 100 * np.mean(ratios, axis=0)
            est_norm[m] = 100 * float(
                np.mean([p / r for p, r in zip(acc_point[m], ref_p, strict=True)])
            )
    return BootstrapAverages(abs_avg, norm_avg, est_abs, est_norm, samples)


def interval(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of bootstrap ``draws``."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_difference(
    draws_a: np.ndarray, draws_b: np.ndarray, estimate: float, confidence: float = CONFIDENCE
) -> dict[str, float]:
    """``a − b``: the estimate, its percentile interval and a two-sided bootstrap p-value.

    Args:
        draws_a, draws_b: the two models' draws of one statistic (same resamples).
        estimate: ``a − b`` on the data itself.
        confidence: level of the interval.
    """
    d = np.asarray(draws_a) - np.asarray(draws_b)
    lo, hi = interval(d, confidence)
    p = 1.0 if np.all(d == 0) else float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))
    return {"diff": float(estimate), "lo": lo, "hi": hi, "p": p}


__all__ = [
    "CONFIDENCE",
    "BootstrapAverages",
    "bootstrap_averages",
    "holm",
    "interval",
    "mcnemar",
    "paired_difference",
    "wilson_interval",
]
