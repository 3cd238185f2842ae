"""Masking mechanics: STE gradients, frozen base weights, tied weights, Conv1D."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from modularevo.models.arch import describe
from modularevo.modules.layers import (
    MaskedModel,
    MaskScores,
    binarize,
    kept_fraction,
    maskable_params,
    masked_weight,
    tied_parameter_names,
)


def _tiny_bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return BertForMaskedLM(cfg)


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def test_binarize_is_step_with_clipped_identity_gradient() -> None:
    s = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    m = binarize(s)
    assert m.tolist() == [0.0, 0.0, 1.0]
    (m * torch.tensor([3.0, -0.2, -5.0])).sum().backward()
    assert s.grad is not None
    assert s.grad.tolist() == pytest.approx([1.0, -0.2, -1.0])


def test_masked_weight_gradient_is_clipped_product_and_weight_gets_none() -> None:
    w = torch.tensor([[2.0, -1.0], [0.5, 4.0]], requires_grad=True)
    s = torch.tensor([[1.0, -1.0], [1.0, 1.0]], requires_grad=True)
    out = masked_weight(w, s)
    assert out.tolist() == [[2.0, 0.0], [0.5, 4.0]]
    out.sum().backward()
    assert w.grad is None
    assert s.grad is not None
    # d out / d mask = w, clipped to [-1, 1]
    assert s.grad.tolist() == [[1.0, -1.0], [0.5, 1.0]]


def test_kept_fraction_value_and_constant_gradient() -> None:
    a = torch.tensor([1.0, -1.0, 2.0], requires_grad=True)
    b = torch.tensor([[-1.0, 3.0]], requires_grad=True)
    k = kept_fraction([a, b])
    assert float(k) == pytest.approx(3 / 5)
    (2.5 * k).backward()
    assert a.grad is not None
    assert b.grad is not None
    assert torch.allclose(a.grad, torch.full((3,), 0.5))
    assert torch.allclose(b.grad, torch.full((1, 2), 0.5))


def test_full_mask_reproduces_dense_model_and_base_never_changes() -> None:
    model = _tiny_bert().eval()
    arch = describe(model)
    names = maskable_params(model, arch.maskable)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    scores = MaskScores({n: params[n].shape for n in names}, init_range=(0.1, 1.0))
    wrapped = MaskedModel(model, scores)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    dense = model(input_ids=ids).logits
    out = wrapped(input_ids=ids, labels=ids)
    assert torch.allclose(out.logits, dense, atol=1e-6)
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = wrapped(input_ids=ids, labels=ids).loss + 5.0 * scores.kept_fraction()
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in model.parameters())


def test_ste_gradient_reaches_every_score_tensor() -> None:
    model = _tiny_bert()
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    scores = MaskScores({n: params[n].shape for n in names})
    wrapped = MaskedModel(model, scores)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(2))
    wrapped(input_ids=ids, labels=ids).loss.backward()
    for n in names:
        if not params[n].any():  # BERT inits biases to 0: d(w*m)/dm = w = 0
            continue
        g = scores.score(n).grad
        assert g is not None, n
        assert g.abs().sum() > 0, n


def test_zero_mask_changes_output_and_masks_cover_biases() -> None:
    model = _tiny_bert().eval()
    names = maskable_params(model, describe(model).maskable)
    assert any(n.endswith(".bias") for n in names)
    params = dict(model.named_parameters())
    scores = MaskScores({n: params[n].shape for n in names}, init_range=(-1.0, -0.5))
    assert float(scores.kept_fraction()) == 0.0
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(MaskedModel(model, scores)(input_ids=ids).logits,
                              model(input_ids=ids).logits)  # fmt: skip


def test_tied_weights_are_not_masked_and_embeddings_untouched() -> None:
    model = _tiny_gpt2()
    tied = tied_parameter_names(model)
    assert {"lm_head.weight", "transformer.wte.weight"} <= tied
    # even when asked to mask lm_head, the tied weight is left out
    names = maskable_params(model, [*describe(model).maskable, "lm_head"])
    assert "lm_head.weight" not in names
    wte = model.transformer.wte.weight.detach().clone()
    params = dict(model.named_parameters())
    scores = MaskScores({n: params[n].shape for n in names}, init_range=(-1.0, 0.0))
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(4))
    MaskedModel(model, scores)(input_ids=ids, labels=ids).loss.backward()
    assert torch.equal(model.transformer.wte.weight, wte)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_conv1d_layers_are_masked_elementwise() -> None:
    model = _tiny_gpt2().eval()
    arch = describe(model)
    names = maskable_params(model, arch.maskable)
    assert "transformer.h.0.attn.c_attn.weight" in names
    params = dict(model.named_parameters())
    scores = MaskScores({n: params[n].shape for n in names}, init_range=(0.5, 1.0))
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(5))
    assert torch.allclose(MaskedModel(model, scores)(input_ids=ids).logits,
                          model(input_ids=ids).logits, atol=1e-6)  # fmt: skip


def test_trainable_head_is_the_only_model_parameter_with_grad() -> None:
    model = _tiny_bert()
    head = ["cls.predictions.transform.dense.weight"]
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    wrapped = MaskedModel(model, MaskScores({n: params[n].shape for n in names}), trainable=head)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == head
    assert wrapped is not None


def test_sparse_mlm_head_gives_the_same_loss_and_gradients() -> None:
    model = _tiny_bert().eval()
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    shapes = {n: params[n].shape for n in names}
    scores = MaskScores(shapes, generator=gen, init_range=(-0.3, 1.0))
    wrapped = MaskedModel(model, scores)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(6))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[1, 6] = 7, 9, 11
    full = wrapped(input_ids=ids, labels=labels).loss
    full.backward()
    g_full = scores.score(names[0]).grad.clone()  # type: ignore[union-attr]
    scores.zero_grad()
    sparse = wrapped(input_ids=ids, labels=labels, sparse_head="cls").loss
    sparse.backward()
    assert float(sparse) == pytest.approx(float(full), rel=1e-5)
    assert torch.allclose(scores.score(names[0]).grad, g_full, atol=1e-6)  # type: ignore[arg-type]
