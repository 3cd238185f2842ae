"""Report tables from hand-made records: normalization, ordering, markdown shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.report import last_round_rows, markdown_table, table_rows, write_report
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
