"""The random-mask control, the retention probe, the gate and per-example predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from evolve_helpers import fake_config, tiny_inputs

from modularevo.evolution import evolve
from modularevo.evolution.loop import GateError, check_gate
from modularevo.evolution.state import RoundRecord, RunDir
from modularevo.modules import load_module

pytestmark = pytest.mark.slow


def test_random_control_retention_and_predictions(tmp_path: Path) -> None:
    data, texts = tiny_inputs()
    strategies = ["base", "single_task", "modularevo", "modularevo_random", "ft_cabs"]
    cfg = fake_config(
        tmp_path / "evo", rounds=1, strategies=strategies, retention_tasks=["tc"], plots=False
    )
    root = evolve(cfg, datasets=data, texts=texts)
    run = RunDir(root)
    for domain in ("da", "db"):  # the twin keeps every parameter's kept count, not its places
        chosen = json.loads((root / "modules" / domain / "module.json").read_text())["file"]
        module = load_module(root / "modules" / domain / chosen)
        twin = load_module(root / "modules" / domain / "random_twin.safetensors")
        assert set(twin.masks) == set(module.masks)
        for name, m in module.masks.items():
            assert int(twin.masks[name].sum()) == int(m.sum()), name
        assert any(not torch.equal(twin.masks[n], m) for n, m in module.masks.items())
    keys = {p.name for p in (root / "finetunes" / "r1").iterdir()}
    assert {"base-ta-module", "base-ta-module-random", "base-ta-full"} <= keys
    base0 = run.read_record("base", 0)
    assert set(base0.retention) == {"tc"}
    assert "tc" not in base0.scores
    for name in ("modularevo", "modularevo_random", "ft_cabs"):
        rec = run.read_record(name, 1)
        assert set(rec.retention) == {"tc"}, name
        test = rec.retention["tc"]["test"]
        assert len(test["predictions"]) == test["n"] == 24
        for task in ("ta", "tb"):
            s = rec.scores[task]["test"]
            hits = sum(p == y for p, y in zip(s["predictions"], s["labels"], strict=True))
            assert hits / s["n"] == pytest.approx(s["accuracy"])
    assert run.read_record("single_task", 1).retention == {}
    report = json.loads((root / "report" / "report.json").read_text())
    forgetting = report["retention"]
    assert {(r["strategy"], r["round"]) for r in forgetting} >= {("modularevo", 1), ("base", 0)}


def _records(run: RunDir, base: float, single: float) -> None:
    def scores(acc: float) -> dict:
        return {t: {"validation": {"accuracy": acc}, "test": {"accuracy": acc}} for t in ("a", "b")}

    run.write_round(RoundRecord("base", 0, scores=scores(base)), None)
    run.write_round(RoundRecord("single_task", 1, scores=scores(single)), None)


def test_gate_passes_and_stops_with_the_gains_in_the_message(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _records(run, 0.50, 0.60)
    assert check_gate(run, ["a", "b"], 8.0) == pytest.approx({"a": 10.0, "b": 10.0})
    _records(run, 0.50, 0.55)
    with pytest.raises(GateError, match=r"by >= 8 points .* a \+5\.0, b \+5\.0"):
        check_gate(run, ["a", "b"], 8.0)
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False


def test_a_failed_gate_stops_before_the_main_phase(tmp_path: Path) -> None:
    data, texts = tiny_inputs()
    strategies = ["base", "single_task", "ft_task_arithmetic"]
    cfg = fake_config(tmp_path / "evo", rounds=1, strategies=strategies, gate_min_gain=100.0)
    with pytest.raises(GateError, match="gate failed"):
        evolve(cfg, datasets=data, texts=texts)
    run = RunDir(tmp_path / "evo")
    assert run.has_round("single_task", 1)
    assert not run.has_round("ft_task_arithmetic", 1)
    # the round-1 full fine-tunes stay for the main phase of a later, resumed run
    assert list((tmp_path / "evo" / "finetunes" / "r1").glob("*/tuned.safetensors"))
