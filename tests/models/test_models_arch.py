"""describe() on tiny random models of every registered family, plus an inferred one."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as tf

from modularevo.models.arch import ARCHITECTURES, describe, is_linear
from modularevo.models.heads import SequenceClassifier

torch.set_num_threads(1)
SMALL = {"vocab_size": 64}


def _bert_cfg(**kw):
    return tf.BertConfig(
        **SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        **kw,
    )  # fmt: skip


def _build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt_neo":
        cfg = tf.GPTNeoConfig(**SMALL, hidden_size=32, num_layers=2, num_heads=4,
                              intermediate_size=64, attention_types=[[["global", "local"], 1]],
                              bos_token_id=0, eos_token_id=0)  # fmt: skip
        return tf.GPTNeoForCausalLM(cfg)
    if family == "gpt2":
        cfg = tf.GPT2Config(**SMALL, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
        return tf.GPT2LMHeadModel(cfg)
    if family == "llama":
        cfg = tf.LlamaConfig(**SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=48)  # fmt: skip
        return tf.LlamaForCausalLM(cfg)
    if family == "gemma":
        cfg = tf.Gemma3TextConfig(**SMALL, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                                  intermediate_size=48)  # fmt: skip
        return tf.Gemma3ForCausalLM(cfg)
    if family == "bert":
        return tf.BertForMaskedLM(_bert_cfg())
    if family == "roberta":
        cfg = tf.RobertaConfig(**SMALL, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64)  # fmt: skip
        return tf.RobertaForSequenceClassification(cfg)
    if family in ("t5", "t5_gated"):
        ff = "gated-gelu" if family == "t5_gated" else "relu"
        cfg = tf.T5Config(**SMALL, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          feed_forward_proj=ff)  # fmt: skip
        return tf.T5ForConditionalGeneration(cfg)
    if family == "encoder_decoder":
        cfg = tf.EncoderDecoderConfig.from_encoder_decoder_configs(_bert_cfg(), _bert_cfg())
        return tf.EncoderDecoderModel(config=cfg)
    raise KeyError(family)


# family -> (expected family key, maskable count, ffn count, attention kinds, heads, act_dim)
CASES = {
    "gpt_neo": ("gpt_neo", 12, 2, ["self"] * 2, ("lm_head",), 64),
    "gpt2": ("gpt2", 8, 2, ["self"] * 2, ("lm_head",), 128),
    "llama": ("llama", 14, 2, ["self"] * 2, ("lm_head",), 48),
    "gemma": ("llama", 14, 2, ["self"] * 2, ("lm_head",), 48),
    "bert": ("bert", 12, 2, ["self"] * 2, ("cls",), 64),
    "roberta": ("bert", 12, 2, ["self"] * 2, ("classifier",), 64),
    # T5: encoder blocks have q,k,v,o + wi,wo (6); decoder blocks add cross attention (10)
    "t5": ("t5", 32, 4, ["self", "self", "self", "cross", "self", "cross"], ("lm_head",), 64),
    "t5_gated": ("t5", 36, 4, ["self", "self", "self", "cross", "self", "cross"], ("lm_head",), 64),
    "encoder_decoder": (
        "encoder_decoder", 32, 4, ["self", "self", "self", "cross", "self", "cross"],
        ("encoder.pooler", "decoder.cls"), 64,
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(CASES))
def test_describe_family(family: str) -> None:
    model = _build(family)
    key, n_mask, n_ffn, kinds, heads, act_dim = CASES[family]
    info = describe(model)
    assert info.family == key
    assert len(info.maskable) == n_mask
    assert len(info.ffn) == n_ffn
    assert [a.kind for a in info.attention] == kinds
    assert info.heads == heads
    assert all(f.act_dim == act_dim for f in info.ffn)
    modules = dict(model.named_modules())
    for name in info.maskable:
        assert is_linear(modules[name])
        assert not info.is_head(name)
    for f in info.ffn:
        assert f.up in info.maskable
        assert f.down in info.maskable
    for a in info.attention:
        assert {a.q, a.k, a.v, a.o} <= set(info.maskable)
        assert a.num_heads == 4
        assert a.head_dim == 8
    # every Linear is either maskable or inside a head
    linears = {n for n, m in modules.items() if is_linear(m)}
    assert linears == set(info.maskable) | {n for n in linears if info.is_head(n)}


def test_tied_weights_named() -> None:
    assert ("lm_head.weight", "transformer.wte.weight") in describe(_build("gpt_neo")).tied
    assert ("lm_head.weight", "transformer.wte.weight") in describe(_build("gpt2")).tied
    t5 = describe(_build("t5"))
    assert ("lm_head.weight", "shared.weight") in t5.tied
    assert ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight") in (
        describe(_build("bert")).tied
    )
    assert describe(_build("llama")).tied == ()  # Llama unties its head by default


def test_gpt2_conv1d_is_transposed() -> None:
    model = _build("gpt2")
    info = describe(model)
    assert set(info.conv1d) == set(info.maskable)  # every GPT-2 Linear is a Conv1D
    c_fc = dict(model.named_modules())["transformer.h.0.mlp.c_fc"]
    assert info.is_transposed("transformer.h.0.mlp.c_fc")
    assert tuple(c_fc.weight.shape) == (32, 128)  # (in, out): transposed vs nn.Linear
    assert info.attention[0].fused
    assert info.attention[0].q == "transformer.h.0.attn.c_attn"
    assert describe(_build("gpt_neo")).conv1d == ()


def test_llama_gated_ffn_and_gqa() -> None:
    info = describe(_build("gemma"))
    f = info.ffn[0]
    assert (f.gate, f.up, f.down) == (
        "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"
    )  # fmt: skip
    assert info.attention[0].num_kv_heads == 1
    gated_t5 = describe(_build("t5_gated")).ffn[0]
    assert gated_t5.gate is not None
    assert gated_t5.gate.endswith("wi_0")
    assert gated_t5.up.endswith("wi_1")


def test_wrapped_classifier_backbone_keeps_family_and_head() -> None:
    backbone = tf.GPTNeoModel(_build("gpt_neo").config)
    clf = SequenceClassifier(backbone, 3, pooling="last")
    info = describe(clf)
    assert info.family == "gpt_neo"
    assert "classifier" in info.heads
    assert info.ffn[0].up == "backbone.h.0.mlp.c_fc"
    assert all(n.startswith("backbone.") for n in info.maskable)


def test_unknown_family_is_inferred_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = tf.OPTConfig(**SMALL, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       ffn_dim=64, word_embed_proj_dim=32)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="modularevo.models.arch"):
        info = describe(tf.OPTForCausalLM(cfg))
    assert "not a registered architecture" in caplog.text
    assert info.family == "inferred"
    assert [(f.up.rsplit(".", 1)[1], f.down.rsplit(".", 1)[1], f.act_dim) for f in info.ffn] == [
        ("fc1", "fc2", 64),
        ("fc1", "fc2", 64),
    ]
    a = info.attention[0]
    assert (a.q, a.o) == ("model.decoder.layers.0.self_attn.q_proj",
                          "model.decoder.layers.0.self_attn.out_proj")  # fmt: skip
    assert info.heads == ("lm_head",)
    assert len(info.maskable) == 12


def test_plain_torch_module_inferred() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = torch.nn.Linear(4, 16), torch.nn.Linear(16, 4)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(), Block()])
            self.classifier = torch.nn.Linear(4, 2)

    info = describe(Net())
    assert [f.up for f in info.ffn] == ["blocks.0.up", "blocks.1.up"]
    assert info.heads == ("classifier",)
    assert info.maskable == ("blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down")


def test_registry_lists_required_families() -> None:
    assert {"gpt_neo", "gpt2", "llama", "bert", "t5", "encoder_decoder"} <= set(ARCHITECTURES)
