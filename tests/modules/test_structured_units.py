"""Structured masks: whole FFN neurons and whole attention heads."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from modularevo.models.arch import describe
from modularevo.modules.layers import MaskedModel
from modularevo.modules.structured import StructuredScores


def _bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=16, max_position_embeddings=32,
    )  # fmt: skip
    return BertForMaskedLM(cfg)


def _set_units(scores: StructuredScores, kept: dict[str, list[int]]) -> None:
    with torch.no_grad():
        for key, p in scores.scores.items():
            unit = key.replace("--", ":").replace("__", ".")
            p.fill_(-1.0)
            for i in kept.get(unit, []):
                p[i] = 1.0


def test_ffn_neuron_masks_rows_of_up_columns_of_down_and_up_bias() -> None:
    model = _bert()
    arch = describe(model)
    params = dict(model.named_parameters())
    scores = StructuredScores(arch, params, heads=False)
    layer = arch.ffn[0]
    _set_units(scores, {f"ffn:{layer.layer}": [2, 5]})
    masks = scores.hard_masks()
    up, down = masks[f"{layer.up}.weight"], masks[f"{layer.down}.weight"]
    assert up.shape == (16, 32)
    assert down.shape == (32, 16)
    assert up.all(dim=1).tolist() == [i in (2, 5) for i in range(16)]
    assert (up.any(dim=1) == up.all(dim=1)).all()  # whole rows
    assert down.all(dim=0).tolist() == [i in (2, 5) for i in range(16)]
    assert masks[f"{layer.up}.bias"].tolist() == [i in (2, 5) for i in range(16)]
    assert f"{layer.down}.bias" not in masks
    # kept fraction: 2 of 16 neurons of layer 0, none of layer 1
    assert float(scores.kept_fraction()) == (2 / 16) / 2


def test_head_masks_whole_heads_of_qkv_rows_and_o_columns() -> None:
    model = _bert()
    arch = describe(model)
    scores = StructuredScores(arch, dict(model.named_parameters()), ffn=False)
    a = arch.attention[1]
    _set_units(scores, {f"heads:{a.layer}": [1]})
    masks = scores.hard_masks()
    expect = [8 <= i < 16 for i in range(32)]  # head 1 of 4, head_dim 8
    for lin in (a.q, a.k, a.v):
        m = masks[f"{lin}.weight"]
        assert m.all(dim=1).tolist() == expect
        assert (m.any(dim=1) == m.all(dim=1)).all()
        assert masks[f"{lin}.bias"].tolist() == expect
    assert masks[f"{a.o}.weight"].all(dim=0).tolist() == expect
    assert not masks[f"{arch.attention[0].q}.weight"].any()


def test_structured_gradient_reaches_unit_scores_and_model_runs() -> None:
    model = _bert()
    arch = describe(model)
    scores = StructuredScores(arch, dict(model.named_parameters()))
    wrapped = MaskedModel(model, scores)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    (wrapped(input_ids=ids, labels=ids).loss + scores.kept_fraction()).backward()
    for p in scores.parameters():
        assert p.grad is not None
        assert p.grad.abs().sum() > 0


def test_gpt2_fused_qkv_conv1d_masks_columns_in_three_slices() -> None:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=4, n_positions=16,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    arch = describe(model)
    scores = StructuredScores(arch, dict(model.named_parameters()))
    a, f = arch.attention[0], arch.ffn[0]
    _set_units(scores, {f"heads:{a.layer}": [0], f"ffn:{f.layer}": [3]})
    masks = scores.hard_masks()
    qkv = masks[f"{a.q}.weight"]  # Conv1D: (in=32, out=96)
    assert qkv.shape == (32, 96)
    kept_cols = qkv.all(dim=0)
    assert kept_cols.tolist() == [(i % 32) < 8 for i in range(96)]
    assert masks[f"{a.o}.weight"].all(dim=1).tolist() == [i < 8 for i in range(32)]
    up = masks[f"{f.up}.weight"]  # (32, 128): neuron = column
    assert up.all(dim=0).tolist() == [i == 3 for i in range(128)]
    assert masks[f"{f.down}.weight"].all(dim=1).tolist() == [i == 3 for i in range(128)]
