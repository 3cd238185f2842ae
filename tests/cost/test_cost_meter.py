"""Cost meter: hand-checked params/FLOPs, interleaved latency, report outputs, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from modularevo.cost.meter import count_flops, count_params, disk_size, measure_cost
from modularevo.cost.report import cost_json, cost_table, plot_cost


class TwoLinear(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.a = nn.Linear(16, hidden)
        self.b = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(batch, seq, 16)}


def test_params_and_flops_hand_checked() -> None:
    m = TwoLinear(32)
    assert count_params(m) == (16 * 32 + 32 + 32 * 4 + 4, 16 * 32 + 32 + 32 * 4 + 4)
    m.a.weight.data[:, :8] = 0
    assert count_params(m)[1] == 16 * 32 + 32 + 32 * 4 + 4 - 8 * 32
    # 2 FLOPs per multiply-add: 2*(B*T)*(16*32 + 32*4)
    assert count_flops(m, inputs(2, 3)) == 2 * 6 * (16 * 32 + 32 * 4)


def test_tied_params_counted_once() -> None:
    m = TwoLinear(16)
    m.b.weight = m.a.weight  # type: ignore[assignment]  # shapes differ in use; count only
    assert count_params(m)[0] == 16 * 16 + 16 + 4


@pytest.mark.slow
def test_measure_cost_grid_and_report(tmp_path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"x" * 1000)
    reps = measure_cost(
        {"big": TwoLinear(256), "small": TwoLinear(8)}, inputs, batch_sizes=(1, 4),
        seq_lens=(5,), repeats=3, warmup=1, disk_paths={"big": tmp_path}, threads=1,
    )  # fmt: skip
    assert [r.name for r in reps] == ["big", "small"]
    assert reps[0].disk_bytes == 1000
    assert reps[1].disk_bytes is None
    assert [(p.batch, p.seq_len) for p in reps[0].points] == [(1, 5), (4, 5)]
    assert reps[0].point(4, 5).flops > reps[1].point(4, 5).flops
    assert all(p.latency_ms > 0 and p.throughput > 0 for r in reps for p in r.points)
    assert torch.get_num_threads() >= 1
    data = json.loads(cost_json(reps, {"cpu": "x"}))
    assert data["cpu"] == "x"
    assert data["models"][1]["name"] == "small"
    assert cost_table(reps).row_count == 4
    assert plot_cost(reps, tmp_path / "p.png").stat().st_size > 1000


def test_disk_size_of_folder_counts_weights_only(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"1" * 10)
    (tmp_path / "config.json").write_text("{}")
    assert disk_size(tmp_path) == 10
    assert disk_size(None) is None


@pytest.mark.slow
def test_cost_cli_dense_vs_extracted(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from modularevo.cli.main import app
    from modularevo.deploy.extract import extract_module, save_extracted
    from modularevo.modules.mask import ModuleMask

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, num_labels=2, max_position_embeddings=32,
    )  # fmt: skip
    dense = BertForSequenceClassification(cfg).eval()
    dense.save_pretrained(tmp_path / "dense")
    keep = torch.arange(64) < 16
    mask = {"bert.encoder.layer.0.output.dense.weight": keep[None, :].expand(32, 64).clone()}
    save_extracted(extract_module(dense, ModuleMask(masks=mask)), tmp_path / "small")
    (tmp_path / "c.yaml").write_text(f"model: {tmp_path / 'dense'}\n")
    res = CliRunner().invoke(
        app,
        ["cost", "--config", str(tmp_path / "c.yaml"), f"module={tmp_path / 'small'}",
         "batch_sizes=[2]", "seq_lens=[8]", "repeats=2", f"out={tmp_path / 'out'}"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "cost.json").read_text())
    names = [m["name"] for m in data["models"]]
    assert names == ["dense", "module (extracted)"]
    assert data["models"][1]["params"] < data["models"][0]["params"]
