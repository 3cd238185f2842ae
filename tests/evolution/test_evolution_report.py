"""Report tables from hand-made records: normalization, ordering, markdown shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.report import write_report
from modularevo.evolution.report_tables import last_round_rows, markdown_table, table_rows
from modularevo.evolution.state import RoundRecord, RunDir


def _rec(strategy: str, rnd: int, a: float, b: float, **kw: object) -> RoundRecord:
    def s(x: float) -> dict[str, dict[str, float]]:
        return {"validation": {"accuracy": x}, "test": {"accuracy": x}}

    return RoundRecord(strategy, rnd, scores={"a": s(a), "b": s(b)}, **kw)  # type: ignore[arg-type]


RECORDS = [
    _rec("base", 0, 0.2, 0.4),
    _rec("base", 1, 0.2, 0.4),
    _rec("single_task", 1, 0.8, 0.5),
    _rec(
        "modularevo", 1, 0.6, 0.5, search={"lambdas": [0.5, 1.0], "density": None, "evaluations": 7}
    ),
]


def test_rows_hand_checked() -> None:
    rows = {(r["round"], r["strategy"]): r for r in table_rows(RECORDS, ["a", "b"])}
    assert len(rows) == 4
    me = rows[(1, "modularevo")]
    assert me["abs_avg"] == pytest.approx(55.0)
    assert me["norm_avg"] == pytest.approx(100 * (0.6 / 0.8 + 0.5 / 0.5) / 2)  # 87.5
    assert me["search_evals"] == 7
    assert rows[(1, "single_task")]["norm_avg"] == pytest.approx(100.0)
    assert rows[(0, "base")]["norm_avg"] is None  # no single_task in round 0
    assert rows[(1, "base")]["norm_avg"] == pytest.approx(100 * (0.25 + 0.8) / 2)


def test_last_round_sorted_and_markdown_shape() -> None:
    rows = table_rows(RECORDS, ["a", "b"])
    last = last_round_rows(rows)
    assert [r["strategy"] for r in last] == ["single_task", "modularevo", "base"]
    md = markdown_table(last, ["a", "b"]).splitlines()
    assert len(md) == 2 + 3
    assert md[0].count("|") == md[2].count("|") == 10
    assert "87.50" in md[3]
    assert "0.5/1" in md[3]


def test_write_report_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for rec in RECORDS:
        run.write_round(rec, None)
    cfg = EvolveConfig(tasks=["a", "b"], rounds=1, output_dir=str(tmp_path))
    md = write_report(tmp_path, cfg)
    assert md.is_file()
    assert (tmp_path / "report" / "report.json").is_file()
    assert (tmp_path / "report" / "rounds.png").is_file()
    assert "| 1 | modularevo |" in md.read_text()


def _pred_records(seed: int = 0) -> list[RoundRecord]:
    """Two tasks of 200 examples, rounds 0-2; skill per strategy, a retention task."""
    rng = np.random.default_rng(seed)
    labels = {t: rng.integers(0, 3, 200) for t in ("a", "b", "keep")}
    skill = {"base": 0.55, "single_task": 0.8, "modularevo": 0.75, "modularevo_random": 0.62,
             "ft_ties": 0.6, "ft_cabs": 0.58}  # fmt: skip

    def split(t: str, acc: float) -> dict[str, object]:
        right = rng.random(200) < acc
        preds = np.where(right, labels[t], (labels[t] + 1) % 3)
        return {"accuracy": float(right.mean()), "n": 200, "predictions": preds.tolist(),
                "labels": labels[t].tolist()}  # fmt: skip

    def scores(acc: float, tasks: tuple[str, ...] = ("a", "b")) -> dict:
        return {t: {"validation": split(t, acc), "test": split(t, acc)} for t in tasks}

    recs = [RoundRecord("base", 0, scores=scores(0.55), retention=scores(0.7, ("keep",)))]
    for rnd in (1, 2):
        for name, acc in skill.items():
            kept = {} if name == "single_task" else scores(0.7 - 0.05 * rnd, ("keep",))
            recs.append(RoundRecord(name, rnd, scores=scores(acc), retention=kept))
    return recs


def test_report_with_predictions_has_intervals_tests_verdicts_and_forgetting(
    tmp_path: Path,
) -> None:
    run = RunDir(tmp_path)
    for rec in _pred_records():
        run.write_round(rec, None)
    cfg = EvolveConfig(tasks=["a", "b"], rounds=2, output_dir=str(tmp_path))
    md = write_report(tmp_path, cfg).read_text()
    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    stats = rep["stats"]
    assert stats["n"] == {"a": 200, "b": 200}
    row = next(r for r in stats["rows"] if (r["round"], r["strategy"]) == (2, "modularevo"))
    for t in ("a", "b"):
        d = row["tasks"][t]
        assert d["lo"] < d["accuracy"] < d["hi"]
        assert d["hi"] - d["lo"] < 15
    assert row["abs_avg"]["lo"] < row["abs_avg"]["value"] < row["abs_avg"]["hi"]
    n_pairs = {1: 15, 2: 15, 0: 0}  # C(6, 2) per trained round
    for rnd, k in n_pairs.items():
        assert sum(p["round"] == rnd for p in stats["pairs"]) == k
    p = next(
        p for p in stats["pairs"] if p["round"] == 2 and {p["a"], p["b"]} == {"base", "single_task"}
    )
    assert p["abs_avg"]["p_holm"] >= p["abs_avg"]["p"]
    assert all("p_holm" in m for m in p["mcnemar"].values())
    v = rep["verdicts"]
    assert v["best_baseline_on_validation"] in ("ft_ties", "ft_cabs")
    assert v["modularevo_vs_best_baseline"]["verdict"] == "yes"  # 75% vs ≤ 60% on 400 examples
    assert v["learned_module_vs_random"]["lo"] > 0
    forgetting = {(r["strategy"], r["round"]): r for r in rep["retention"]}
    assert ("single_task", 1) not in forgetting
    assert forgetting[("base", 0)]["forgetting"] == pytest.approx(0.0)
    assert (
        forgetting[("modularevo", 2)]["forgetting_lo"]
        <= forgetting[("modularevo", 2)]["forgetting"]
    )
    assert "predictions" not in json.dumps(rep["records"])  # per-example lists stay in records
    for text in ("Wilson 95% interval", "Decision rules", "Paired comparisons", "Forgetting"):
        assert text in md
    assert (tmp_path / "report" / "rounds.png").stat().st_size > 10_000


def test_tradeoff_points_and_plot_of_the_last_round(tmp_path: Path) -> None:
    from modularevo.evolution.report_plots import tradeoff_plot, tradeoff_points

    def row(name: str, rnd: int, v: float) -> dict:
        return {"round": rnd, "strategy": name, "abs_avg": {"value": v, "lo": v - 1, "hi": v + 1}}

    stats = {"rows": [row("a", 1, 50.0), row("a", 2, 80.0), row("b", 2, 85.0)]}

    def ret(name: str, task: str, f: float, half: float, rnd: int = 2) -> dict:
        return {"strategy": name, "round": rnd, "task": task, "forgetting": f,
                "forgetting_lo": f - half, "forgetting_hi": f + half}  # fmt: skip

    retention = [ret("a", "p", 1.0, 0.5), ret("a", "q", 3.0, 2.0), ret("b", "p", 9.0, 1.0),
                 ret("b", "q", 11.0, 1.0), ret("a", "p", 99.0, 1.0, rnd=1)]  # fmt: skip
    pts = tradeoff_points(stats, retention)
    assert pts["a"]["accuracy"] == (80.0, 79.0, 81.0)  # the last round only
    assert pts["a"]["forgetting"] == (2.0, 0.0, 4.0)  # mean, widest half-width
    assert pts["b"]["forgetting"] == (10.0, 9.0, 11.0)
    out = tradeoff_plot(tmp_path / "t.png", stats, retention)
    assert out is not None
    assert out.stat().st_size > 1000
    assert tradeoff_plot(tmp_path / "u.png", stats, retention[:2]) is None
