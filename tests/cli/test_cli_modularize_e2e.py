"""End-to-end ``modularevo modularize`` + ``modularevo analyze`` on the tiny test config."""

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "modularize" / "tiny_test.yaml"


def test_modularize_dry_run_prints_config_and_writes_nothing(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, text = run_cli(["modularize", str(CONFIG), f"output_dir={out}", "--dry-run"])
    assert code == 0, text
    assert '"alpha": null' in text  # calibrated from the domain's LM gradients
    assert not out.exists()


@pytest.mark.slow
def test_modularize_then_analyze_through_the_cli(tmp_path: Path, monkeypatch, run_cli) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    args = ["modularize", str(CONFIG), f"output_dir={run}", "progress=false", "steps=60"]
    code, text = run_cli(args)
    assert code == 0, text
    modules = sorted(run.glob("module-*.safetensors"))
    assert [p.name for p in modules] == [
        "module-0.25.safetensors",
        "module-0.5.safetensors",
        "module-0.75.safetensors",
    ], text
    assert (run / "modularize.json").is_file()

    out = tmp_path / "analysis"
    code, text = run_cli(["analyze", *map(str, modules), "--out", str(out), "--no-plots"])
    assert code == 0, text
    report = json.loads((out / "analysis.json").read_text())
    assert len(report["modules"]) == 3
    assert set(report["corpora"]) == {"math"}
    assert len(report["loss_matrix"]) == 1 + 3 + 3  # dense, modules, twins
    for label, v in report["verdicts"].items():
        assert v["module_minus_twin"]["n"] == report["corpora"]["math"], label
    assert "module - twin" in text
    rnd = tmp_path / "random.safetensors"
    code, text = run_cli(["random-module", str(modules[0]), str(rnd), "--seed", "3"])
    assert code == 0, text
    assert rnd.is_file()
    densities = sorted(e["density"] for e in report["modules"].values())
    assert densities[0] <= 0.25 < densities[1] <= 0.5 < densities[2] <= 0.75
    first = next(iter(report["overlap"].values()))
    assert all(0 < v["jaccard"] <= 1 for v in first.values())
