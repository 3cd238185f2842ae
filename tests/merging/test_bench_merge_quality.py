"""Smoke test of benchmarks/bench_merge_quality.py (``--quick``: tiny-bert, tiny splits)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_merge_quality", ROOT / "benchmarks" / "bench_merge_quality.py"
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_quick_run_writes_the_tables_and_reuses_fine_tunes(tmp_path: Path):
    bench = _bench()
    methods = ["task_arithmetic", "cart", "pcb", "opcm_whole"]
    argv = ["--quick", "--tasks", "lang-id", "code-package", "--methods", *methods]
    assert bench.main([*argv, "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "results.json").read_text())
    rows = result["by_k"]["2"]["rows"]
    assert set(rows) == {"finetuned", "base_backbone", "average", *methods}
    for m, r in rows.items():
        assert r["abs_ci"][0] <= r["abs_avg"] <= r["abs_ci"][1], m
        assert set(r["per_task"]) == {"lang-id", "code-package"}
    assert "vs_ta_norm" in rows["cart"]
    assert rows["pcb"]["seconds"] >= 0
    chosen = result["by_k"]["2"]["runs"][0]["chosen"]
    assert chosen["pcb"]["density"] in (0.2, 0.4)
    assert chosen["cart"]["extra"]["rank_fraction"] == 0.1
    assert (tmp_path / "a" / "plot.png").stat().st_size > 1000
    assert "| task_arithmetic |" in (tmp_path / "a" / "table.md").read_text()
    # the fine-tunes of run a are reused as `modularevo finetune` folders: no training
    argv2 = [
        *argv[: -len(methods)],
        "task_arithmetic",
        "--finetunes",
        str(tmp_path / "a" / "finetunes"),
    ]
    assert bench.main([*argv2, "--out", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / "finetunes").exists()
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["by_k"]["2"]["rows"]["finetuned"] == rows["finetuned"]
    # a rerun into the same folder reuses every (subset, method) record: no merge runs
    calls: list[str] = []
    real = bench.merge_and_score
    bench.merge_and_score = lambda *a: calls.append(a[2]) or real(*a)
    try:
        assert bench.main([*argv, "--out", str(tmp_path / "a")]) == 0
        assert calls == []
        rerun = json.loads((tmp_path / "a" / "results.json").read_text())
        assert rerun["by_k"]["2"]["rows"] == rows
        # --report-only: the same tables from the records, without loading a model
        real_setup, bench.load_setup = bench.load_setup, None  # would fail if called
        assert bench.main([*argv, "--report-only", "--out", str(tmp_path / "a")]) == 0
        bench.load_setup = real_setup
        report = json.loads((tmp_path / "a" / "results.json").read_text())
        assert report["by_k"]["2"]["rows"] == rows
        # a record made with other settings is redone, not reused
        assert bench.main([*argv, "--seed", "1", "--out", str(tmp_path / "a")]) == 0
        assert sorted(calls) == sorted(["average", *methods])
    finally:
        bench.merge_and_score = real
