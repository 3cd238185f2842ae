"""The deploy benchmark's report: paired intervals, the stricter reference decides, sizes."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _records(dense_wrong: int, more_wrong: int, module_wrong: int, speed: float, n: int = 400):
    labels = [i % 5 for i in range(n)]

    def preds(wrong: int) -> list[int]:  # the first `wrong` examples wrong
        return [(y + 1) % 5 if i < wrong else y for i, y in enumerate(labels)]

    point = {"median_ms": 100.0, "iqr_ms": 1.0}
    fast = {"median_ms": 100.0 / speed, "iqr_ms": 1.0}
    latency = {
        "repeats": 5,
        "threads": 1,
        "seq_len": 64,
        "batch1": {"torch/dense": point, "torch/f384h4": fast},
        "batch8": {"torch/dense": point, "torch/f384h4": fast},
    }
    task = {
        "dense": {"labels": labels, "preds": preds(dense_wrong), "params": 22_700_000},
        "dense_more": {"preds": preds(more_wrong)},
        "latency": latency,
        "modules": {
            "f384h4": {
                "preds": preds(module_wrong),
                "preds_before_ft": preds(200),
                "params": 15_000_000,
            }
        },
    }
    return {"cpu": "test", "args": {"max_len": "64"}, "tasks": {"lang-id": task}}


def test_identical_predictions_give_a_zero_difference_and_a_zero_interval():
    rep = _load("deploy_report")
    (row,) = rep.accuracy_rows(_records(10, 10, 10, 3.0), 500, 0)
    assert row["diff"]["dense"] == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0}
    assert row["acc"] == pytest.approx(97.5)


def test_a_clearly_worse_module_has_an_interval_below_zero():
    rep = _load("deploy_report")
    (row,) = rep.accuracy_rows(_records(0, 0, 40, 3.0), 1000, 0)
    d = row["diff"]["dense"]
    assert d["diff"] == pytest.approx(-10.0)
    assert d["hi"] < 0
    assert d["lo"] < d["diff"] < d["hi"]
    assert d["p"] < 0.01


def test_the_verdict_needs_both_speed_and_accuracy_against_the_stricter_reference():
    rep = _load("deploy_report")
    (ok,) = rep.verdicts(_records(10, 10, 12, 3.0), 300, 0)
    assert "target met by f384h4" in ok
    assert "3.00x" in ok
    (slow,) = rep.verdicts(_records(10, 10, 12, 2.4), 300, 0)
    assert "missed" in slow
    # within 1 point of the plateau model, but 2.5 points below the same-budget one
    (strict,) = rep.verdicts(_records(10, 0, 10, 3.0), 300, 0)
    assert "missed" in strict
    assert "-2.50" in strict


def test_the_markdown_names_every_reference_and_the_latency(tmp_path: Path):
    rep = _load("deploy_report")
    records = _records(10, 8, 12, 3.0)
    md = rep.report_markdown(records, 200, 0)
    assert "| lang-id | 400 | f384h4 | 22.7M → 15.0M | 97.50 | 98.00 |" in md
    assert "| lang-id | torch | 8 | f384h4 | 33.3 (1.0) | 3.00× |" in md
    assert rep.frontier_plot(records, tmp_path / "f.png", 200, 0) == tmp_path / "f.png"
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_module_sizes_parse_and_bad_ones_are_refused():
    bench = _load("bench_deploy")
    assert bench.parse_size("384x4") == (384, 4)
    assert bench.size_name((512, 6)) == "f512h6"
    with pytest.raises(argparse.ArgumentTypeError, match="FFNxHEADS"):
        bench.parse_size("384")


class _Probe:
    """A linear classifier on one feature: ``model(input_ids=.., attention_mask=.., labels=..)``."""

    def __new__(cls):
        import torch
        from torch import nn

        class Probe(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(1, 2)

            def forward(self, input_ids, attention_mask, labels=None):
                logits = self.lin(input_ids[:, :1].float())
                loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
                return argparse.Namespace(logits=logits, loss=loss)

        torch.manual_seed(0)
        return Probe()


def test_training_with_validation_keeps_the_best_point_and_without_it_the_last():
    import torch

    tr = _load("deploy_training")
    n = 64
    x = torch.arange(n).remainder(2)[:, None].repeat(1, 4)  # feature 0/1 decides the label
    am = torch.ones_like(x)
    good = (x, am, x[:, 0].clone())
    flipped = (x, am, 1 - x[:, 0])  # trained on the opposite rule, validated on the right one
    model = _Probe()
    fit = tr.train(model, flipped, steps=60, lr=0.5, batch=16, seed=0, val=good, eval_every=10)
    curve = [acc for _, acc in fit["val_curve"]]
    assert len(curve) == 7  # the start and every 10 steps
    assert fit["val_acc"] == max(curve)
    assert curve[-1] < max(curve)  # training on the flipped rule ruins validation ...
    assert tr.accuracy(model, good) == fit["val_acc"]  # ... and the best point is restored
    steps = [step for step, _ in fit["val_curve"]]
    assert steps[0] == 0
    assert fit["selected_step"] == steps[curve.index(max(curve))]
    last = _Probe()
    assert "val_acc" not in tr.train(last, flipped, steps=60, lr=0.5, batch=16, seed=0)
    assert tr.accuracy(last, good) == curve[-1]  # same run, no selection: the last point


def test_runs_selected_on_validation_report_their_chosen_step_and_plot_their_curves(
    tmp_path: Path,
):
    rep = _load("deploy_report")
    records = _records(10, 8, 12, 3.0)
    task = records["tasks"]["lang-id"]
    assert "Selection on the validation split" not in rep.report_markdown(records, 200, 0)
    assert rep.curves_plot(records, tmp_path / "none.png") is None  # nothing selected
    task["dense_more"] |= {
        "steps": 900,
        "selected": {"selected_step": 300, "val_acc": 90.5, "val_curve": [[0, 89.0], [300, 90.5]]},
    }
    task["modules"]["f384h4"] |= {
        "recovery_steps": 600,
        "selected": {"selected_step": 0, "val_acc": 80.0, "val_curve": [[0, 80.0], [100, 79.0]]},
    }
    md = rep.report_markdown(records, 200, 0)
    assert "| lang-id | dense, same budget | 900 | 300 | 89.00 | 90.50 |" in md
    assert "| lang-id | f384h4 recovery | 600 | 0 | 80.00 | 80.00 |" in md
    assert rep.curves_plot(records, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").stat().st_size > 1000
