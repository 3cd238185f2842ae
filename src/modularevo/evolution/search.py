"""λ and density search for one merge, scored on the validation split only.

Two stages, both counted in the reported cost:

1. grid: every density × one λ shared by all tasks;
2. coordinate refinement from the best grid point: ``passes`` sweeps over the tasks,
   moving one task's λ by ±``step`` and keeping a move only when the score rises.

The objective is a callable ``(lambdas, density) -> score`` that the caller builds
on validation data (:meth:`modularevo.evolution.evaluate.TaskEvaluator.search_objective`
locks the test split while it runs). Repeated points are answered from a cache and
not counted twice.

Example:
    >>> res = search_merge(lambda lam, d: -abs(lam[0] - 0.7) - abs(lam[1] - 0.4),
    ...                    2, lambdas=(0.3, 0.5, 0.7), densities=(None,), passes=2, step=0.1)
    >>> [round(x, 1) for x in res.lambdas], res.evaluations
    ([0.7, 0.4], 9)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Objective = Callable[[list[float], float | None], float]


@dataclass
class SearchResult:
    """The chosen point and what finding it cost.

    Attributes:
        lambdas: λ per task.
        density: the chosen density (``None`` for methods without one).
        score: the objective at that point (validation).
        evaluations: number of distinct merge + validation evaluations.
        seconds: wall time of the search.
        trace: every evaluated point with its score, in order.
    """

    lambdas: list[float]
    density: float | None
    score: float
    evaluations: int
    seconds: float
    trace: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the trace included)."""
        return {
            "lambdas": self.lambdas,
            "density": self.density,
            "val_score": self.score,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "trace": self.trace,
        }


class _Cached:
    def __init__(self, objective: Objective, on_eval: Callable[[], None] | None) -> None:
        self.objective = objective
        self.on_eval = on_eval
        self.seen: dict[tuple[tuple[float, ...], float | None], float] = {}
        self.trace: list[dict[str, Any]] = []

    def __call__(self, lambdas: list[float], density: float | None) -> float:
        key = (tuple(round(x, 6) for x in lambdas), density)
        if key not in self.seen:
            score = float(self.objective(list(key[0]), density))
            self.seen[key] = score
            self.trace.append({"lambdas": list(key[0]), "density": density, "score": score})
            if self.on_eval is not None:
                self.on_eval()
        return self.seen[key]


def search_merge(
    objective: Objective,
    num_tasks: int,
    *,
    lambdas: Sequence[float],
    densities: Sequence[float | None],
    passes: int = 1,
    step: float = 0.1,
    on_eval: Callable[[], None] | None = None,
) -> SearchResult:
    """Grid over (density × shared λ), then per-task coordinate refinement of λ.

    Args:
        objective: ``(lambdas, density) -> score`` on validation; higher is better.
        num_tasks: number of λ values per point.
        lambdas: shared-λ grid.
        densities: density grid; ``[None]`` for methods without a density.
        passes: coordinate-refinement sweeps (0: grid only).
        step: λ move per refinement try; λ never goes below 0.
        on_eval: called after every new evaluation (progress bars).

    Returns:
        The best point found (first one on ties) with its cost.
    """
    if num_tasks < 1 or not lambdas or not densities:
        raise ValueError("search needs >= 1 task, a λ grid and a density grid")
    start = time.perf_counter()
    f = _Cached(objective, on_eval)
    best: tuple[float, list[float], float | None] | None = None
    for d in densities:
        for lam in lambdas:
            point = [float(lam)] * num_tasks
            score = f(point, d)
            if best is None or score > best[0]:
                best = (score, point, d)
    assert best is not None
    score, point, density = best
    score, point = _refine(f, (score, point), density, passes=passes, step=step)
    return SearchResult(
        lambdas=[round(x, 6) for x in point],
        density=density,
        score=score,
        evaluations=len(f.seen),
        seconds=time.perf_counter() - start,
        trace=f.trace,
    )


def _refine(
    f: _Cached,
    start: tuple[float, list[float]],
    density: float | None,
    *,
    passes: int,
    step: float,
) -> tuple[float, list[float]]:
    """Coordinate ascent on the λ of one task at a time (first improving move wins)."""
    score, point = start
    for _ in range(passes):
        moved = False
        for t in range(len(point)):
            for sign in (1.0, -1.0):
                trial = list(point)
                trial[t] = round(trial[t] + sign * step, 6)
                if trial[t] < 0:
                    continue
                s = f(trial, density)
                if s > score:
                    score, point, moved = s, trial, True
                    break
        if not moved:
            break
    return score, point
