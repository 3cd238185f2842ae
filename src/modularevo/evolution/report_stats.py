"""The report's statistics: intervals per row, paired tests per pair, forgetting.

Per row (round, strategy): Wilson intervals per task and bootstrap intervals of the
averages; per pair: paired bootstrap (stratified by task), McNemar per task, Holm
correction within the round (:mod:`modularevo.evaluation.stats`).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from modularevo.evaluation.stats import (
    CONFIDENCE,
    bootstrap_averages,
    holm,
    interval,
    mcnemar,
    paired_difference,
    wilson_interval,
)
from modularevo.evolution.state import RoundRecord

BOOTSTRAP_SAMPLES = 2000


def _correct(scores: dict[str, Any], tasks: list[str], split: str) -> dict[str, np.ndarray] | None:
    out = {}
    for t in tasks:
        s = scores.get(t, {}).get(split, {})
        if "predictions" not in s:
            return None
        out[t] = np.asarray(s["predictions"]) == np.asarray(s["labels"])
    return out


def evolution_stats(
    records: list[RoundRecord],
    tasks: list[str],
    *,
    split: str = "test",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Intervals and paired tests of every round (``None`` when predictions are missing).

    Per row (round, strategy): n and the Wilson 95% interval of each task's accuracy, and
    the bootstrap 95% interval of the absolute and normalized averages. Per round and pair
    of strategies: the paired bootstrap (stratified by task) of the difference in absolute
    and normalized average, and McNemar per task; Holm-corrected within the round (one
    family per statistic: all pairs' abs avg tests, all pairs' norm avg tests, all pairs ×
    tasks McNemar tests).
    """
    by_round: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for rec in records:
        c = _correct(rec.scores, tasks, split)
        if c is None:
            return None
        by_round.setdefault(rec.round, {})[rec.strategy] = c
    if not by_round:
        return None
    first = next(iter(by_round.values()))
    n = {t: len(first[next(iter(first))][t]) for t in tasks}
    rows, pairs = [], []
    for rnd, correct in sorted(by_round.items()):
        ref = "single_task" if "single_task" in correct else None
        boot = bootstrap_averages(correct, tasks, reference=ref, samples=samples, seed=seed + rnd)
        for name, c in sorted(correct.items()):
            row: dict[str, Any] = {"round": rnd, "strategy": name, "tasks": {}}
            for t in tasks:
                k, m = int(c[t].sum()), len(c[t])
                lo, hi = wilson_interval(k, m)
                row["tasks"][t] = {"accuracy": 100 * k / m, "lo": 100 * lo, "hi": 100 * hi}
            row["abs_avg"] = _point(boot.estimate_abs[name], boot.abs_avg[name])
            if name in boot.norm_avg:
                row["norm_avg"] = _point(boot.estimate_norm[name], boot.norm_avg[name])
            rows.append(row)
        pairs += _round_pairs(rnd, correct, boot, tasks)
    return {
        "split": split,
        "confidence": CONFIDENCE,
        "bootstrap_samples": samples,
        "n": n,
        "rows": rows,
        "pairs": pairs,
    }


def _point(estimate: float, draws: np.ndarray) -> dict[str, float]:
    lo, hi = interval(draws)
    return {"value": estimate, "lo": lo, "hi": hi}


def _round_pairs(
    rnd: int, correct: dict[str, dict[str, np.ndarray]], boot: Any, tasks: list[str]
) -> list[dict[str, Any]]:
    names = sorted(correct)
    out: list[dict[str, Any]] = []
    for a, b in combinations(names, 2):
        pair: dict[str, Any] = {"round": rnd, "a": a, "b": b}
        pair["abs_avg"] = paired_difference(
            boot.abs_avg[a], boot.abs_avg[b], boot.estimate_abs[a] - boot.estimate_abs[b]
        )
        if a in boot.norm_avg:
            est = boot.estimate_norm[a] - boot.estimate_norm[b]
            pair["norm_avg"] = paired_difference(boot.norm_avg[a], boot.norm_avg[b], est)
        pair["mcnemar"] = {t: mcnemar(correct[a][t], correct[b][t]) for t in tasks}
        out.append(pair)
    for key in ("abs_avg", "norm_avg"):
        tested = [p for p in out if key in p]
        for p, adj in zip(tested, holm([p[key]["p"] for p in tested]), strict=True):
            p[key]["p_holm"] = adj
    tests = [p["mcnemar"][t] for p in out for t in tasks]
    for test, adj in zip(tests, holm([x["p"] for x in tests]), strict=True):
        test["p_holm"] = adj
    return out


def find_pair(stats: dict[str, Any], rnd: int, a: str, b: str) -> dict[str, Any] | None:
    """The comparison ``a − b`` of round ``rnd`` (signs flipped when stored as ``b − a``)."""
    for p in stats["pairs"]:
        if p["round"] != rnd:
            continue
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):
            flip = {"round": rnd, "a": a, "b": b, "mcnemar": p["mcnemar"]}
            for key in ("abs_avg", "norm_avg"):
                if key in p:
                    d = p[key]
                    flip[key] = {**d, "diff": -d["diff"], "lo": -d["hi"], "hi": -d["lo"]}
            return flip
    return None


def retention_rows(records: list[RoundRecord], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per (strategy, round, retention task): test accuracy of the fixed round-0 probe head
    with its Wilson interval, and forgetting = round-0 accuracy − this accuracy (points) with
    a paired bootstrap interval over the same examples."""
    base0 = next((r for r in records if r.strategy == "base" and r.round == 0), None)
    if base0 is None or not base0.retention:
        return []
    out = []
    for rec in records:
        for task, splits in rec.retention.items():
            s, s0 = splits.get("test", {}), base0.retention[task].get("test", {})
            if "predictions" not in s or "predictions" not in s0:
                continue
            c = np.asarray(s["predictions"]) == np.asarray(s["labels"])
            c0 = np.asarray(s0["predictions"]) == np.asarray(s0["labels"])
            lo, hi = wilson_interval(int(c.sum()), len(c))
            boot = bootstrap_averages({"r0": {task: c0}, "r": {task: c}}, [task], seed=seed)
            diff = paired_difference(
                boot.abs_avg["r0"], boot.abs_avg["r"], 100 * (c0.mean() - c.mean())
            )
            out.append(
                {
                    "strategy": rec.strategy, "round": rec.round, "task": task, "n": len(c),
                    "accuracy": 100 * float(c.mean()), "lo": 100 * lo, "hi": 100 * hi,
                    "forgetting": diff["diff"], "forgetting_lo": diff["lo"],
                    "forgetting_hi": diff["hi"],
                }
            )  # fmt: skip
    return out
