"""Pictures (random expectation, layer x matrix names, cost panels) and training curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from modularevo.utils import curves as curves_mod
from modularevo.utils.curves import Curves, tensorboard_available
from modularevo.utils.plots import (
    cost_panels,
    density_grid,
    layer_and_matrix,
    overlap_heatmap,
    plot_curves,
    random_jaccard,
)


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (0.3, 0.5), (0.1, 0.9)])
def test_random_jaccard_matches_two_independent_random_masks(a: float, b: float):
    g = torch.Generator().manual_seed(0)
    n = 400_000
    ma, mb = torch.rand(n, generator=g) < a, torch.rand(n, generator=g) < b
    measured = float((ma & mb).sum() / (ma | mb).sum())
    assert random_jaccard(a, b) == pytest.approx(a * b / (a + b - a * b))
    assert measured == pytest.approx(random_jaccard(a, b), abs=0.005)


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("bert.encoder.layer.3.attention.self.query.weight", (3, "attn.query")),
        ("encoder.layer.0.attention.output.dense.weight", (0, "attn.out")),
        ("backbone.encoder.layer.11.intermediate.dense.weight", (11, "ffn.in")),
        ("bert.encoder.layer.2.output.dense.bias", (2, "ffn.out.bias")),
        ("transformer.h.5.mlp.c_fc.weight", (5, "mlp.c_fc")),
        ("model.layers.7.self_attn.q_proj.weight", (7, "attn.q_proj")),
        ("bert.embeddings.word_embeddings.weight", (None, "embeddings.word_embeddings")),
    ],
)
def test_layer_and_matrix_names(name: str, want: tuple[int | None, str]):
    assert layer_and_matrix(name) == want


def test_pictures_are_written(tmp_path: Path):
    names = ["math", "law"]
    overlap_heatmap(names, {"math": {"law": 0.2}, "law": {"math": 0.2}},
                    {"math": 0.5, "law": 0.25}, tmp_path / "overlap.png")  # fmt: skip
    per = {m: {f"bert.encoder.layer.{i}.attention.self.query.weight": 0.1 * i for i in range(3)}
           for m in names}  # fmt: skip
    density_grid(per, tmp_path / "density.png")
    rows = [{"model": m, "batch": b, "seq_len": 64, "latency_ms": f * b, "latency_iqr_ms": 0.1}
            for m, f in (("dense", 2.0), ("module", 1.0)) for b in (1, 8)]  # fmt: skip
    cost_panels(rows, tmp_path / "cost.png", baseline="dense")
    records = [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5, "val/accuracy": 0.7}]
    plot_curves(records, tmp_path / "c.png")
    for f in ("overlap.png", "density.png", "cost.png", "c.png"):
        assert _png(tmp_path / f), f


def test_curves_keep_numbers_skip_none_and_nan_and_draw(tmp_path: Path):
    c = Curves(tmp_path, "run", tracker="none")
    c.log({"train/loss": 1.5, "val/accuracy": None}, 1)
    c.log({"train/loss": float("nan")}, 2)
    c.log({"train/loss": 0.5, "val/accuracy": 0.75, "flag": True}, 3)
    assert c.close(title="t") == tmp_path / "curves.png"
    assert json.loads((tmp_path / "curves.json").read_text()) == [
        {"step": 1, "train/loss": 1.5},
        {"step": 3, "train/loss": 0.5, "val/accuracy": 0.75},
    ]
    assert _png(tmp_path / "curves.png")
    assert not (tmp_path / "tensorboard").exists()  # tracker: none


def test_curves_off_on_other_processes_and_with_nothing_logged(tmp_path: Path):
    c = Curves(tmp_path / "a", "run", tracker="tensorboard", enabled=False)
    c.log({"train/loss": 1.0}, 1)
    assert c.close(title="t") is None
    assert not (tmp_path / "a").exists()
    assert Curves(tmp_path / "b", "run", tracker="none").close(title="t") is None


@pytest.mark.skipif(not tensorboard_available(), reason="the `curves` extra is not installed")
def test_tensorboard_events_hold_the_logged_scalars(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    c = Curves(tmp_path, "finetune", tracker="tensorboard")
    assert c.tracking
    for step, loss in enumerate([1.0, 0.8, 0.6], start=1):
        c.log({"train/loss": loss}, step)
    c.close(title="t")
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "finetune"))
    acc.Reload()
    got = [(e.step, round(e.value, 6)) for e in acc.Scalars("train/loss")]
    assert got == [(1, 1.0), (2, 0.8), (3, 0.6)]


def test_without_tensorboard_the_png_is_still_written(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(curves_mod, "tensorboard_available", lambda: False)
    with caplog.at_level("INFO"):
        c = Curves(tmp_path, "run", tracker="tensorboard")
    assert not c.tracking
    assert "modularevo[curves]" in caplog.text
    c.log({"train/loss": 1.0}, 1)
    assert _png(c.close(title="t") or Path("missing"))
    assert math.isfinite(json.loads((tmp_path / "curves.json").read_text())[0]["train/loss"])
