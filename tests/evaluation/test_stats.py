"""Intervals and paired tests: hand-checked values and the properties the report relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modularevo.evaluation.stats import (
    bootstrap_averages,
    holm,
    interval,
    mcnemar,
    paired_difference,
    wilson_interval,
)


def test_wilson_matches_the_closed_form() -> None:
    k, n, z = 37, 50, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9)
    assert hi == pytest.approx(centre + half, abs=1e-9)
    assert wilson_interval(0, 20)[0] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs() -> None:
    a = np.array([1] * 10 + [0] * 2 + [1] * 30, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 30, bool)
    res = mcnemar(a, b)
    assert (res["a_only"], res["b_only"]) == (10, 2)
    exact = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12  # P(X <= 2) doubled
    assert res["p"] == pytest.approx(exact)
    assert mcnemar(a, a)["p"] == 1.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar(a, a[:5])


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_paired_bootstrap_is_stratified_and_paired() -> None:
    rng = np.random.default_rng(0)
    tasks = {"small": 40, "large": 400}
    truth = {t: rng.random(n) < 0.7 for t, n in tasks.items()}
    flip = {t: rng.random(n) < 0.05 for t, n in tasks.items()}
    correct = {
        "a": truth,
        "b": {t: truth[t] ^ flip[t] for t in tasks},  # b disagrees with a on ~5%
        "ref": {t: np.ones(n, bool) for t, n in tasks.items()},
    }
    boot = bootstrap_averages(correct, list(tasks), reference="ref", samples=1000, seed=1)
    est = boot.estimate_abs["a"] - boot.estimate_abs["b"]
    exp = 50 * sum(truth[t].mean() - correct["b"][t].mean() for t in tasks)
    assert est == pytest.approx(exp)
    d = paired_difference(boot.abs_avg["a"], boot.abs_avg["b"], est)
    assert d["lo"] <= est <= d["hi"]
    # the pairing cancels the shared noise: far narrower than either model's own interval
    own = interval(boot.abs_avg["a"])
    assert d["hi"] - d["lo"] < 0.5 * (own[1] - own[0])
    assert boot.norm_avg["a"] == pytest.approx(boot.abs_avg["a"])  # reference always right
    same = paired_difference(boot.abs_avg["a"], boot.abs_avg["a"], 0.0)
    assert (same["lo"], same["hi"], same["p"]) == (0.0, 0.0, 1.0)


def test_a_clear_difference_excludes_zero_and_a_null_one_mostly_does_not() -> None:
    rng = np.random.default_rng(3)
    n = 500
    good = {"t": rng.random(n) < 0.8}
    bad = {"t": rng.random(n) < 0.6}
    boot = bootstrap_averages({"g": good, "b": bad}, ["t"], samples=1000, seed=0)
    est = boot.estimate_abs["g"] - boot.estimate_abs["b"]
    assert paired_difference(boot.abs_avg["g"], boot.abs_avg["b"], est)["lo"] > 0
    covered = 0
    for seed in range(40):  # two models of equal skill: the interval covers 0 about 95% of runs
        r = np.random.default_rng(100 + seed)
        a, b = {"t": r.random(200) < 0.7}, {"t": r.random(200) < 0.7}
        bt = bootstrap_averages({"a": a, "b": b}, ["t"], samples=400, seed=seed)
        e = bt.estimate_abs["a"] - bt.estimate_abs["b"]
        d = paired_difference(bt.abs_avg["a"], bt.abs_avg["b"], e)
        covered += d["lo"] <= 0 <= d["hi"]
    assert covered >= 34


def test_no_normalized_average_when_the_reference_scores_zero_on_a_task() -> None:
    zeros, ones = np.zeros(20, dtype=bool), np.ones(20, dtype=bool)
    correct = {"ref": {"a": zeros, "b": ones}, "m": {"a": ones, "b": ones}}
    boot = bootstrap_averages(correct, ["a", "b"], reference="ref", samples=50, seed=0)
    assert boot.norm_avg == {}
    assert boot.estimate_norm == {}
    assert boot.estimate_abs["m"] == 100.0
