"""The pure parts of benchmarks/bench_deploy_sparse.py and its siblings (sparse_*.py): the
unstructured module at its target sparsity, zeros held while training a tiny random BERT, the
statistics, the table, the timing in ONNX Runtime (also with torch unimportable, as in the
DeepSparse venv), and (when a DeepSparse venv is there) in DeepSparse."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

ROOT = Path(__file__).resolve().parents[2]
DS_PYTHON = Path("/tmp/ds-venv/bin/python")


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_deploy_sparse", ROOT / "benchmarks" / "bench_deploy_sparse.py"
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _bench()  # puts benchmarks/ on sys.path for its siblings
module = importlib.import_module("sparse_module")
timing = importlib.import_module("sparse_timing")


def _tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    sizes: dict[str, Any] = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 3,
             "max_position_embeddings": 64}  # fmt: skip
    cfg = BertConfig(**sizes)
    return BertForSequenceClassification(cfg).eval()


def _toy_data(n: int = 96, seq: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (n, seq), generator=g)
    y = ids[:, 1] % 3  # learnable: the label is the second token's group
    am = torch.ones_like(ids)
    am[: n // 3, seq // 2 :] = 0
    return ids * am, am, y


def test_magnitude_masks_hand_computed_and_monotone():
    w = torch.tensor([[0.1, -0.9, 0.3], [0.5, -0.2, 0.8], [-0.7, 0.05, 0.4]])
    m = module.magnitude_masks({"w": w}, sparsity=2 / 3)["w"]  # keep 3 of 9: 0.9, 0.8, 0.7
    assert m.dtype == torch.bool
    assert m.tolist() == [[False, True, False], [False, False, True], [True, False, False]]
    # an entry outside ``keep`` never comes back, even if it is the largest
    keep = {"w": ~torch.eye(3, dtype=torch.bool)}  # drops 0.1, -0.2, 0.4
    m2 = module.magnitude_masks({"w": w}, sparsity=0.5, keep=keep)["w"]
    assert int(m2.sum()) == round(0.5 * 9)
    assert not (m2 & ~keep["w"]).any()
    assert module.magnitude_masks({"w": w}, sparsity=0.0)["w"].all()
    with pytest.raises(ValueError, match="sparsity"):
        module.magnitude_masks({"w": w}, sparsity=1.5)


def test_module_covers_the_encoder_linears_at_the_target_sparsity():
    model = _tiny_bert()
    weights = bench.encoder_linear_weights(model)
    assert len(weights) == 2 * 6  # q, k, v, attention output, FFN up, FFN down per block
    assert not any("pooler" in n or "classifier" in n or "embeddings" in n for n in weights)
    masks = module.magnitude_masks(weights, sparsity=0.75)
    for name, w in weights.items():
        assert int((~masks[name]).sum()) == round(0.75 * w.numel()), name


def test_cubic_schedule():
    assert module.cubic_sparsity(0, target=0.75, ramp_steps=100) == 0.0
    assert module.cubic_sparsity(100, target=0.75, ramp_steps=100) == pytest.approx(0.75)
    assert module.cubic_sparsity(500, target=0.75, ramp_steps=100) == pytest.approx(0.75)
    assert module.cubic_sparsity(50, target=0.75, ramp_steps=100) == pytest.approx(0.75 * 7 / 8)


@pytest.mark.parametrize("distill", [False, True])
def test_zeros_are_held_in_every_forward_during_training(distill: bool):
    from modularevo.training.distill import DistillConfig

    model = _tiny_bert()
    teacher = _tiny_bert() if distill else None
    start = {n: w.detach().clone() for n, w in bench.encoder_linear_weights(model).items()}
    name = "bert.encoder.layer.1.intermediate.dense"
    lin = model.get_submodule(name)
    weight = bench.encoder_linear_weights(model)[f"{name}.weight"]  # updated in place
    numel = weight.numel()
    seen: list[int] = []  # zeros in the weight each forward actually used
    lin.register_forward_pre_hook(lambda *_: seen.append(int(weight.eq(0).sum())))
    dcfg = DistillConfig.model_validate({}) if distill else None
    masks, log = bench.train_sparse(model, _toy_data(), steps=30, sparsity=0.75, ramp=0.5,
                                    prune_every=3, lr=1e-3, batch=8, teacher=teacher,
                                    distill=dcfg)  # fmt: skip
    weights = bench.encoder_linear_weights(model)
    for n, w in weights.items():
        assert (w[~masks[n]] == 0).all(), n
        assert int(w.eq(0).sum()) == round(0.75 * w.numel()), n
        assert not torch.equal(w[masks[n]], start[n][masks[n]]), f"{n} did not train"
    assert seen == sorted(seen), "a pruned weight came back"
    assert seen[-1] == round(0.75 * numel)
    assert seen.count(round(0.75 * numel)) >= 15  # the fixed-mask half of the steps
    assert log[-1]["sparsity"] == pytest.approx(0.75, abs=1e-3)


def test_accuracy_stats_and_speedup():
    dense = [1, 1, 1, 1, 0] * 40
    sparse = [1, 1, 0, 1, 0] * 40
    s = bench.accuracy_stats(dense, sparse)
    assert s["n"] == 200
    assert s["dense"]["acc"] == pytest.approx(80.0)
    assert s["sparse"]["acc"] == pytest.approx(60.0)
    assert s["diff"]["diff"] == pytest.approx(-20.0)
    assert s["diff"]["lo"] < -20.0 < s["diff"]["hi"] < 0
    assert s["mcnemar"]["a_only"] == 0
    assert s["mcnemar"]["b_only"] == 40
    same = timing.speedup([10.0, 11.0, 12.0], [10.0, 11.0, 12.0])
    assert (same["ratio"], same["lo"], same["hi"]) == (1.0, 1.0, 1.0)
    twice = timing.speedup([20.0, 22.0, 24.0, 30.0], [10.0, 11.0, 12.0, 15.0])
    assert twice["ratio"] == pytest.approx(2.0)
    assert twice["lo"] == pytest.approx(2.0)
    assert twice["hi"] == pytest.approx(2.0)


def _record(timing: dict | None = None) -> dict:
    acc = bench.accuracy_stats([1, 1, 1, 0] * 25, [1, 0, 1, 0] * 25)
    return {"task": "toy", "sparsity_target": 0.75, "steps": 30, "accuracy": acc,
            "module": {"encoder_linear_sparsity": 0.75}, "timing": timing}  # fmt: skip


def test_table_rows():
    pt = {"median_ms": 10.0, "iqr_ms": 1.0}
    timing = {"batch8": {"deepsparse/dense": {"median_ms": 25.0, "iqr_ms": 0.5},
                         "deepsparse/sparse": pt,
                         "deepsparse/speedup": {"ratio": 2.5, "lo": 2.4, "hi": 2.6},
                         "ort/dense": pt, "ort/sparse": pt,
                         "ort/speedup": {"ratio": 1.0, "lo": 0.97, "hi": 1.03}}}  # fmt: skip
    md = bench.table([_record(timing)], batches=(1, 8))
    assert "| toy | 0.750 | 30 | 100 | 75.00 [" in md
    assert "| 50.00 [" in md
    assert "| -25.00 [" in md
    assert "| toy | 0.75 | deepsparse | 8 | 25.0 (0.5) | 10.0 (1.0) | 2.50× [2.40, 2.60] |" in md
    assert "| toy | 0.75 | ort | 8 | 10.0 (1.0) | 10.0 (1.0) | 1.00× [0.97, 1.03] |" in md
    assert "| 1 |" not in md  # no timing at batch 1: no row
    assert bench.table([_record(None)]).count("\n| toy |") == 1


def _graphs(tmp: Path) -> Path:
    pytest.importorskip("onnxruntime")
    dense = _tiny_bert()
    sparse = _tiny_bert()
    w = bench.encoder_linear_weights(sparse)
    module.zero_outside_(w, module.magnitude_masks(w, sparsity=0.75))
    d = tmp / "task"
    d.mkdir()
    for kind, m in (("dense", dense), ("sparse", sparse)):
        assert bench._export(m, d / f"{kind}.onnx") < 1e-4
    ids, am, _ = _toy_data(n=8, seq=bench.SEQ)
    np.savez(d / "inputs.npz", input_ids=ids.numpy(), attention_mask=am.numpy())
    return d


def test_timing_in_onnx_runtime_interleaved(tmp_path: Path):
    d = _graphs(tmp_path)
    assert bench.main(["--time-dir", str(d), "--batches", "1", "2", "--repeats", "4",
                       "--warmup", "1"]) == 0  # fmt: skip
    t = json.loads((d / "timing.json").read_text())
    for b in (1, 2):
        pt = t[f"batch{b}"]
        assert len(pt["raw_ms"]["ort/dense"]) == len(pt["raw_ms"]["ort/sparse"]) == 4
        assert math.isfinite(pt["ort/speedup"]["ratio"])
        assert pt["ort/sparse"]["max_logit_gap_vs_ort"] == 0.0
    if "deepsparse_error" in t["engines"]:
        assert "deepsparse/speedup" not in t["batch1"]


def test_timing_mode_runs_without_torch(tmp_path: Path):
    """``--time-dir`` as the DeepSparse venv runs it: torch and modularevo are not importable."""
    d = _graphs(tmp_path)
    block = ("import runpy, sys;"
             " sys.modules.update(torch=None, transformers=None, modularevo=None);"
             " script = sys.argv.pop(1); sys.argv[0] = script;"
             " runpy.run_path(script, run_name='__main__')")  # fmt: skip
    cmd = [sys.executable, "-c", block, str(ROOT / "benchmarks" / "bench_deploy_sparse.py"),
           "--time-dir", str(d), "--batches", "1", "--repeats", "2", "--warmup", "0"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=240)
    t = json.loads((d / "timing.json").read_text())
    assert math.isfinite(t["batch1"]["ort/speedup"]["ratio"])


@pytest.mark.skipif(not DS_PYTHON.is_file(), reason="no DeepSparse venv at /tmp/ds-venv")
def test_timing_in_deepsparse(tmp_path: Path):
    d = _graphs(tmp_path)
    cmd = [str(DS_PYTHON), str(ROOT / "benchmarks" / "bench_deploy_sparse.py"), "--time-dir",
           str(d), "--batches", "2", "--repeats", "3", "--warmup", "1"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=240)
    t = json.loads((d / "timing.json").read_text())
    if "deepsparse_error" in t["engines"]:
        pytest.skip(f"deepsparse does not run: {t['engines']['deepsparse_error']}")
    pt = t["batch2"]
    for kind in ("dense", "sparse"):  # the engine computes what ONNX Runtime computes
        assert pt[f"deepsparse/{kind}"]["max_logit_gap_vs_ort"] < 1e-3
    assert math.isfinite(pt["deepsparse/speedup"]["ratio"])
    shutil.rmtree(d)
