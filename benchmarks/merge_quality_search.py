"""The merges of ``bench_merge_quality.py``: hyperparameter search, the timed merge, test scores.

Hyperparameters are chosen on validation only (a seeded slice of ``--search-examples`` per
task): one λ shared by the tasks (the per-task ``weight``) on ``--lambdas``, the density on
``--densities`` (TIES, DARE, PCB; CABS n:m with K·n ≤ m), CART's rank fraction on
``--cart-ranks``. Every method except PCB is homogeneous in λ (scaling every τ_t by λ scales
the merged task vector by λ), so its merged task vector is computed once per (density, rank)
and the λ grid costs only evaluations; PCB is merged at every λ. The chosen merge is then
timed (wall time and peak resident memory above the start, sampled every 5 ms) and scored on
the full test splits.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from merge_quality_setup import Setup, State
from modularevo.evolution.evaluate import TaskEvaluator
from modularevo.evolution.search import search_merge
from modularevo.evolution.strategies import get_strategy
from modularevo.merging.continual import ContinualOpcm
from modularevo.merging.in_memory import merge_state_dicts

# method label -> evolution strategy (its merge method and density mapping)
METHODS = {
    "task_arithmetic": "ft_task_arithmetic",
    "ties": "ft_ties",
    "dare": "ft_dare",
    "cabs": "ft_cabs",
    "magmax": "ft_magmax",
    "tsv_m": "ft_tsv_m",
    "iso_c": "ft_iso_c",
    "iso_cts": "ft_iso_cts",
    "cart": "ft_cart",
    "pcb": "ft_pcb",
    "opcm": "ft_opcm",
    "opcm_whole": "ft_opcm",  # the paper's whole-model norms (ContinualOpcm), one at a time
}
NOT_HOMOGENEOUS = {"pcb"}  # tanh(τ ⊙ Σ τ): the merge changes shape with λ


class PeakMemory:
    """Peak resident memory above the start of the block, sampled every 5 ms (MiB)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        """Peak minus start, MiB."""
        return (self.peak - self.start) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def merge(setup: Setup, tasks: Sequence[str], method: str, params: Mapping[str, Any]) -> State:
    """The merged backbone of ``tasks`` (registered ``method``, its parameters);
    ``opcm_whole``: :class:`ContinualOpcm`, the models folded in one at a time."""
    models = [setup.shared[t] for t in tasks]
    if method == "opcm_whole":
        merger = ContinualOpcm(setup.base, alpha=float(params.get("alpha", 0.5)))
        for sd, w in zip(models, params["weight"], strict=True):
            merger.add(sd, weight=w)
        return merger.merged()
    return merge_state_dicts(setup.base, models, method, params, seed=0)


def scaled(base: State, delta: State, lam: float) -> State:
    """``θ_0 + λ Δ`` in the base's dtypes."""
    return {k: (base[k].float() + lam * delta[k]).to(base[k].dtype) for k in base}


def choose(
    setup: Setup, tasks: Sequence[str], label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The chosen hyperparameters of one method on one subset (validation only)."""
    strategy = get_strategy(METHODS[label])
    assert strategy.merge_method is not None
    k = len(tasks)
    densities: list[float | None] = [None]
    if strategy.density != "none":
        densities = list(strategy.usable_densities(args.densities, k)) or [None]
    extras: list[dict[str, Any]] = [{}]
    if label == "cart":
        extras = [{"rank_fraction": r} for r in args.cart_ranks]
    best: dict[str, Any] | None = None
    for extra in extras:
        for d in densities:
            score, lam, evals = _search_one(setup, tasks, label, strategy, d, extra, args)
            if best is None or score > best["val_score"]:
                best = {"lambda": lam, "density": d, "extra": extra, "val_score": score,
                        "evaluations": evals}  # fmt: skip
    assert best is not None
    return best


def _search_one(
    setup: Setup,
    tasks: Sequence[str],
    label: str,
    strategy: Any,
    density: float | None,
    extra: Mapping[str, Any],
    args: argparse.Namespace,
) -> tuple[float, float, int]:
    k = len(tasks)
    method = "opcm_whole" if label == "opcm_whole" else strategy.merge_method

    def params(lam: float) -> dict[str, Any]:
        return {**strategy.method_params([lam] * k, density), **extra}

    if label in NOT_HOMOGENEOUS:

        def merged(lam: float) -> State:
            return merge(setup, tasks, method, params(lam))
    else:
        one = merge(setup, tasks, method, params(1.0))
        delta = {n: one[n].float() - setup.base[n].float() for n in setup.base}

        def merged(lam: float) -> State:
            return scaled(setup.base, delta, lam)

    sub = TaskEvaluator({t: setup.data[t] for t in tasks}, setup.evaluator.templates, 64)
    objective = sub.search_objective(lambda lam, _d: merged(lam[0]), setup.heads)
    res = search_merge(objective, 1, lambdas=args.lambdas, densities=[None], passes=0)
    return res.score, res.lambdas[0], res.evaluations


def final_merge(
    setup: Setup, tasks: Sequence[str], label: str, chosen: Mapping[str, Any]
) -> tuple[State, float, float]:
    """The chosen merge, timed: (state, seconds, peak MiB)."""
    k = len(tasks)
    if label == "average":
        method, params = "task_arithmetic", {"weight": [1.0 / k] * k}
    else:
        strategy = get_strategy(METHODS[label])
        assert strategy.merge_method is not None
        method = "opcm_whole" if label == "opcm_whole" else strategy.merge_method
        params = {**strategy.method_params([chosen["lambda"]] * k, chosen["density"]),
                  **chosen["extra"]}  # fmt: skip
    with PeakMemory() as mem:
        start = time.perf_counter()
        state = merge(setup, tasks, method, params)
        seconds = time.perf_counter() - start
    return state, seconds, mem.mib


def test_scores(setup: Setup, tasks: Sequence[str], states: Callable[[str], State]) -> dict:
    """Per task: test accuracy and per-example correctness."""
    out = {}
    for t in tasks:
        r = setup.evaluator.score(t, {**states(t), **setup.heads[t]}, "test")
        correct = (np.asarray(r["predictions"]) == np.asarray(r["labels"])).astype(np.int8)
        out[t] = {"accuracy": float(r["accuracy"]), "correct": correct.tolist()}
    return out


def merge_and_score(
    setup: Setup, tasks: Sequence[str], label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Choose ``label``'s hyperparameters on validation, merge once (timed), score on test."""
    t0 = time.perf_counter()
    chosen = {"lambda": 1.0, "density": None, "extra": {}} if label == "average" \
        else choose(setup, tasks, label, args)  # fmt: skip
    search_s = time.perf_counter() - t0
    state, secs, mib = final_merge(setup, tasks, label, chosen)
    return {"chosen": chosen, "test": test_scores(setup, tasks, lambda _t: state),
            "cost": {"seconds": secs, "peak_mib": mib, "search_seconds": search_s}}  # fmt: skip
