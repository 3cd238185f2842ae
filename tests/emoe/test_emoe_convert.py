"""emoe_convert on tiny BERT, GPT-2 and GPT-Neo: permutation, layers, errors, dense round trip."""

from __future__ import annotations

import pytest
import torch
from emoe_helpers import BUILDERS, main_output, tiny_bert

from modularevo.emoe import (
    EMoEConfig,
    EMoEFFN,
    emoe_convert,
    emoe_layers,
    emoe_to_dense,
    ffn_keys,
    find_ffn_sites,
    refresh_gates,
    resolve_layers,
)
from modularevo.errors import ConfigError, InputError


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_all_experts_keeps_the_dense_model(family, ids):
    model = BUILDERS[family]()
    before = main_output(model, ids)
    up_name = find_ffn_sites(model)[1].up
    keys = ffn_keys(model.get_submodule(up_name)).detach().clone()
    emoe_convert(model, experts=4, top_k=4, layers="all")
    layers = emoe_layers(model)
    assert sorted(layers) == [0, 1]
    torch.testing.assert_close(main_output(model, ids), before, atol=1e-5, rtol=1e-5)
    layer = layers[1]
    assert layer.cluster_sizes == [layer.expert_size] * 4  # equal-size experts
    assert sorted(layer.perm.tolist()) == list(range(len(keys)))
    torch.testing.assert_close(ffn_keys(model.get_submodule(up_name)), keys[layer.perm])


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_top_k_changes_output_and_to_dense_restores(family, ids):
    model = BUILDERS[family]()
    before = main_output(model, ids)
    emoe_convert(model, experts=4, top_k=1, layers=[-1])
    assert sorted(emoe_layers(model)) == [1]
    assert not torch.allclose(main_output(model, ids), before, atol=1e-4)
    emoe_to_dense(model)
    assert emoe_layers(model) == {}
    torch.testing.assert_close(main_output(model, ids), before, atol=1e-5, rtol=1e-5)


def test_bert_layer_equals_intermediate_with_groups_zeroed(ids):
    model = tiny_bert()
    emoe_convert(model, experts=4, top_k=2, layers=[0])
    layer = model.encoder.layer[0].intermediate
    assert isinstance(layer, EMoEFFN)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = torch.nn.functional.gelu(x @ layer.dense.weight.T + layer.dense.bias)  # (3, 64)
        logits = x @ layer.dense.weight.reshape(4, 16, 32).mean(1).T  # avg-k, no bias
        top = logits.topk(2, dim=-1).indices
        keep = torch.zeros(3, 4).scatter_(1, top, 1.0).repeat_interleave(16, dim=1)
        torch.testing.assert_close(layer(x), h * keep)


def test_same_seed_same_clustering_and_state_dict_keys_unchanged():
    a, b = tiny_bert(), tiny_bert()
    keys_before = set(a.state_dict())
    emoe_convert(a, EMoEConfig(experts=8, top_k=2, layers="last1", seed=5))
    emoe_convert(b, EMoEConfig(experts=8, top_k=2, layers="last1", seed=5))
    assert torch.equal(emoe_layers(a)[1].perm, emoe_layers(b)[1].perm)
    assert set(a.state_dict()) == keys_before


def test_bad_settings_raise_clear_errors():
    model = tiny_bert()
    with pytest.raises(InputError, match="64 neurons into 5 equal-size experts"):
        emoe_convert(model, experts=5, top_k=1, layers=[0])
    with pytest.raises(ConfigError, match="top_k=6 is larger than experts=4"):
        emoe_convert(model, experts=4, top_k=6)
    with pytest.raises(InputError, match=r"unknown layer 7: the model has 2 FFN layers"):
        emoe_convert(model, experts=4, top_k=1, layers=[7])
    with pytest.raises(ConfigError, match="layers must be a list"):
        emoe_convert(model, experts=4, top_k=1, layers="first2")
    emoe_convert(model, experts=4, top_k=1, layers=[0])
    with pytest.raises(InputError, match=r"layer 0 .* is already an EMoE layer"):
        emoe_convert(model, experts=4, top_k=1, layers=[0])


def test_resolve_layers():
    assert resolve_layers("last2", 12) == [10, 11]
    assert resolve_layers("all", 3) == [0, 1, 2]
    assert resolve_layers([11, -2], 12) == [10, 11]
    with pytest.raises(InputError, match="asks for 5 layers but the model has 2"):
        resolve_layers("last5", 2)
    with pytest.raises(InputError, match="same layer twice"):
        resolve_layers([1, -1], 2)


def test_gated_ffn_converts_with_keys_unchanged(ids):
    import transformers as tf

    cfg = tf.LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48,
    )  # fmt: skip
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    keys = set(model.state_dict())
    with pytest.raises(InputError, match="48 neurons into 5 equal-size experts"):
        emoe_convert(model, experts=5, top_k=1, layers="all")
    emoe_convert(model, experts=4, top_k=1, layers="all")
    assert emoe_layers(model)[0].layout.mul == "up_proj"  # gate/up/down cut together
    assert set(model.state_dict()) == keys


def test_refresh_gates_counts_layers_and_resets():
    model = tiny_bert()
    emoe_convert(model, experts=4, top_k=2, layers="all", refresh_gates=False)
    layer = emoe_layers(model)[0]
    old = layer.gates.clone()
    with torch.no_grad():
        layer.dense.weight.add_(1.0)
    model.train()
    model(input_ids=torch.ones(1, 3, dtype=torch.long))
    assert torch.equal(layer.gates, old)  # refresh off: fixed gates
    assert refresh_gates(model) == 2
    torch.testing.assert_close(layer.gates, old + 1.0)


def test_failed_conversion_changes_nothing(ids):
    model = tiny_bert()
    emoe_convert(model, experts=4, top_k=1, layers=[1])
    before = main_output(model, ids)
    with pytest.raises(InputError, match=r"layer 1 .* is already an EMoE layer"):
        emoe_convert(model, experts=4, top_k=1, layers="all")
    assert sorted(emoe_layers(model)) == [1]  # layer 0 was left dense
    torch.testing.assert_close(main_output(model, ids), before)
