"""ONNX export: ONNX Runtime logits equal the PyTorch module's (atol 1e-4), dense and extracted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from test_extract import random_keep, structured_mask  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from modularevo.deploy.extract import extract_module  # noqa: E402
from modularevo.deploy.onnx_export import (  # noqa: E402
    INFO_FILE,
    INT8_FILE,
    ONNX_FILE,
    export_onnx,
    ort_logits,
    ort_session,
    sample_inputs,
)
from modularevo.errors import InputError  # noqa: E402
from modularevo.modules.io import save_module  # noqa: E402
from modularevo.modules.mask import ModuleMask  # noqa: E402

ATOL = 1e-4


def tiny_bert() -> nn.Module:
    """3 layers, 4 heads, 48 FFN neurons; weights large enough for logits of order 1."""
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, num_labels=3, max_position_embeddings=32, initializer_range=0.3,
    )  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def bert_module(model: nn.Module) -> ModuleMask:
    """About half of the FFN neurons and heads of tiny_bert's 3 layers."""
    return structured_mask(model, "bert", random_keep(3, 48, 0.5, 1), random_keep(3, 4, 0.6, 2))


def _torch_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("dynamo", [False, True])
def test_dense_and_module_logits_match_in_ort(tmp_path: Path, dynamo: bool) -> None:
    dense = tiny_bert()
    small = extract_module(dense, bert_module(dense))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dense.parameters())
    for name, model in (("dense", dense), ("module", small)):
        folder = export_onnx(model, tmp_path / name, dynamo=dynamo)
        sess = ort_session(folder / ONNX_FILE, threads=1)
        for batch, seq, seed in ((1, 5, 3), (4, 17, 4)):  # other shapes than the export's
            ids, mask = sample_inputs(60, batch=batch, seq=seq, seed=seed)
            got = ort_logits(sess, ids, mask)
            want = _torch_logits(model, ids, mask)
            assert got.shape == want.shape
            assert want.abs().max() > 0.3  # a 1e-4 tolerance means something at this scale
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        info = json.loads((folder / INFO_FILE).read_text())
        assert info["max_abs_logit_diff"] <= ATOL


def test_module_onnx_differs_from_dense_onnx(tmp_path: Path) -> None:
    """The control: the module's graph computes the module, not the dense model."""
    dense = tiny_bert()
    small = extract_module(dense, bert_module(dense))
    ids, mask = sample_inputs(60, batch=3, seq=8, seed=5)
    a = ort_logits(ort_session(export_onnx(dense, tmp_path / "d", dynamo=False) / ONNX_FILE),
                   ids, mask)  # fmt: skip
    b = ort_logits(ort_session(export_onnx(small, tmp_path / "m", dynamo=False) / ONNX_FILE),
                   ids, mask)  # fmt: skip
    assert (a - b).abs().max() > 0.05


def test_int8_graph_holds_int8_weights(tmp_path: Path) -> None:
    folder = export_onnx(tiny_bert(), tmp_path / "q", dynamo=False, quantize=True)
    q = onnx.load(str(folder / INT8_FILE))
    f = onnx.load(str(folder / ONNX_FILE))
    int8 = [t.name for t in q.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8, "no int8 initializer in the quantized graph"
    assert not any(t.data_type == onnx.TensorProto.INT8 for t in f.graph.initializer)
    info = json.loads((folder / INFO_FILE).read_text())
    assert 0 < info["int8_max_abs_logit_diff"] < 1.0


def test_export_refuses_a_graph_outside_atol(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="differ from the PyTorch"):
        export_onnx(tiny_bert(), tmp_path / "bad", dynamo=False, atol=-1.0)
    assert not (tmp_path / "bad").exists()


def test_export_keeps_train_mode(tmp_path: Path) -> None:
    model = tiny_bert().train()
    export_onnx(model, tmp_path / "t", dynamo=False)
    assert model.training


def test_cli_extract_onnx_and_export_onnx(tmp_path: Path, run_cli) -> None:

    dense = tiny_bert()
    dense.save_pretrained(tmp_path / "dense")
    save_module(bert_module(dense), tmp_path / "m.safetensors")
    small, onnx_dir = tmp_path / "small", tmp_path / "small-onnx"
    module, dense_dir = str(tmp_path / "m.safetensors"), str(tmp_path / "dense")
    code, text = run_cli(["extract", module, "--model", dense_dir, "--out", str(small),
                          "--onnx", str(onnx_dir)])  # fmt: skip
    assert code == 0, text
    code, text = run_cli(["export-onnx", str(tmp_path / "dense"), "--out", str(tmp_path / "d-onnx"),
                          "--torchscript", "--quantize"])  # fmt: skip
    assert code == 0, text
    assert "int8" in text
    assert (tmp_path / "d-onnx" / INT8_FILE).is_file()
    ids, mask = sample_inputs(60, batch=2, seq=10, seed=7)
    for hf, graph in ((small, onnx_dir), (tmp_path / "dense", tmp_path / "d-onnx")):
        ref = _torch_logits(AutoModelForSequenceClassification.from_pretrained(hf), ids, mask)
        got = ort_logits(ort_session(graph / ONNX_FILE), ids, mask)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
