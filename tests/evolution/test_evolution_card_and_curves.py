"""An evolved model's folder carries its model card; the run draws its curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evolve_helpers import fake_config, tiny_inputs
from huggingface_hub import ModelCard

from modularevo.evolution import evolve
from modularevo.evolution.run_config import _results_config
from modularevo.evolution.state import RunDir

pytestmark = pytest.mark.slow


def test_final_model_card_and_round_curves(tmp_path: Path):
    data, texts = tiny_inputs()
    cfg = fake_config(tmp_path / "evo", rounds=1, strategies=["base", "ft_task_arithmetic"],
                      tracker="none")  # fmt: skip
    root = evolve(cfg, datasets=data, texts=texts)
    folder = root / "final" / "ft_task_arithmetic" / "model"
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "tiny-bert"
    assert card.data.datasets == ["ta", "tb"]
    text = card.text
    record = RunDir(root).read_record("ft_task_arithmetic", 1)
    for task in ("ta", "tb"):
        assert f"| {task} (test) |" in text
        assert f"| {task} (validation) |" in text
    assert "| 24 |" in text  # n of each evaluation (max_eval_examples)
    assert "95% interval" in text
    assert "lambdas" in text
    acc = record.scores["ta"]["test"]["accuracy"]
    assert f"| ta (test) | {100 * acc:.2f} | 24 |" in text
    curves = json.loads((root / "report" / "curves.json").read_text())
    assert {r["step"] for r in curves} == {0, 1}  # round 0 (the base) and round 1
    assert any("val/ft_task_arithmetic/mean" in r for r in curves)
    assert (root / "report" / "curves.png").is_file()
    assert not (root / "report" / "tensorboard").exists()  # tracker: none
    jobs = list(root.rglob("tensorboard"))
    assert not jobs, jobs  # tracker: none reaches every fine-tune


def test_a_run_started_before_the_tracker_key_resumes():
    old = {"model": "m", "finetune": {"lr": 1.0}}
    new = {"model": "m", "tracker": "none", "finetune": {"lr": 1.0, "tracker": "tensorboard"}}
    assert _results_config(old) == _results_config(new)
    assert _results_config({**old, "model": "x"}) != _results_config(new)
