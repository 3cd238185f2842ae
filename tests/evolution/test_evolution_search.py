"""λ/density search: hand-checked optimum, cost counting, bounds."""

from __future__ import annotations

import pytest

from modularevo.evolution.search import search_merge


def test_grid_then_coordinate_refinement_finds_the_hand_computed_point() -> None:
    # score = -|λ1 - 0.7| - |λ2 - 0.4|; grid ties (0.5, 0.5) and (0.7, 0.7) at -0.3,
    # the first wins; refinement: (0.6,0.5) -> (0.6,0.4) -> (0.7,0.4).
    res = search_merge(
        lambda lam, d: -abs(lam[0] - 0.7) - abs(lam[1] - 0.4),
        2,
        lambdas=(0.3, 0.5, 0.7),
        densities=(None,),
        passes=2,
        step=0.1,
    )
    assert res.lambdas == pytest.approx([0.7, 0.4])
    assert res.score == pytest.approx(0.0)
    assert res.evaluations == 9  # 3 grid + 3 per pass
    assert len(res.trace) == res.evaluations
    assert res.density is None


def test_density_grid_is_searched_and_repeats_are_not_counted() -> None:
    calls = []

    def objective(lam: list[float], d: float | None) -> float:
        calls.append((tuple(lam), d))
        return -abs(lam[0] - 0.5) + (1.0 if d == 0.25 else 0.0)

    res = search_merge(objective, 1, lambdas=(0.5, 1.0), densities=(0.5, 0.25), passes=3, step=0.5)
    assert res.density == 0.25
    assert res.lambdas == [0.5]
    assert len(calls) == len(set(calls)) == res.evaluations
    # grid 4 points; refinement tries 1.0 (cached) and 0.0 (new): 5 distinct
    assert res.evaluations == 5


def test_lambda_never_goes_negative() -> None:
    res = search_merge(lambda lam, d: -lam[0], 1, lambdas=(0.0,), densities=(None,), passes=2)
    assert res.lambdas == [0.0]
    assert res.evaluations == 2  # 0.0 and 0.1; -0.1 is skipped


def test_grid_only_and_bad_arguments() -> None:
    res = search_merge(lambda lam, d: lam[0], 1, lambdas=(0.2, 0.9), densities=(None,), passes=0)
    assert res.lambdas == [0.9]
    assert res.evaluations == 2
    with pytest.raises(ValueError):
        search_merge(lambda lam, d: 0.0, 0, lambdas=(1.0,), densities=(None,))
