"""Structured extraction: smaller models whose logits equal the masked model's."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from modularevo.deploy.extract import extract_module, plan_extraction, save_extracted
from modularevo.deploy.hf_pruned import FAMILY_SPECS, find_blocks, head_dim_of
from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        num_labels=3,
        max_position_embeddings=32,
    )
    return BertForSequenceClassification(cfg).eval()


def tiny_gptneo() -> nn.Module:
    torch.manual_seed(0)
    cfg = GPTNeoConfig(
        vocab_size=60,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        attention_types=[[["global", "local"], 1]],
        window_size=4,
        max_position_embeddings=32,
    )
    return GPTNeoForCausalLM(cfg).eval()


def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


def structured_mask(
    model: nn.Module, family: str, keep_n: list[Tensor], keep_h: list[Tensor]
) -> ModuleMask:
    """Whole-neuron / whole-head masks, built by hand, on weights and biases."""
    blocks, layers = find_blocks(model, family)
    spec = FAMILY_SPECS[family][1]
    hd = head_dim_of(model.config)
    params = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}

    def put(name: str, rows: Tensor | None = None, cols: Tensor | None = None) -> None:
        if name not in params:
            return
        m = torch.ones_like(params[name], dtype=torch.bool)
        if rows is not None:
            m &= rows.view(-1, *([1] * (m.dim() - 1)))
        if cols is not None:
            m &= cols.view(1, -1)
        masks[name] = m

    for i in range(len(layers)):
        pre, hk = f"{blocks}.{i}", keep_h[i].repeat_interleave(hd)
        for p in spec.up:
            put(f"{pre}.{p}.weight", rows=keep_n[i])
            put(f"{pre}.{p}.bias", rows=keep_n[i])
        put(f"{pre}.{spec.down}.weight", cols=keep_n[i])
        for p in (spec.q, spec.k, spec.v):
            put(f"{pre}.{p}.weight", rows=hk)
            put(f"{pre}.{p}.bias", rows=hk)
        put(f"{pre}.{spec.o}.weight", cols=hk)
    return ModuleMask(masks=masks, domain="test")


def masked_copy(model: nn.Module, module: ModuleMask) -> nn.Module:
    m = copy.deepcopy(model)
    module.apply_(dict(m.named_parameters()))
    return m


def random_keep(n_layers: int, n: int, p: float, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=g) < p for _ in range(n_layers)]


def inputs() -> dict[str, Tensor]:
    ids = torch.randint(0, 60, (3, 11), generator=torch.Generator().manual_seed(5))
    am = torch.ones_like(ids)
    am[0, 7:] = 0  # padding in one row
    return {"input_ids": ids, "attention_mask": am}


CASES = [("bert", tiny_bert, 3), ("gpt_neo", tiny_gptneo, 2), ("llama", tiny_llama, 2)]


@pytest.mark.parametrize(("family", "build", "n_layers"), CASES)
def test_logits_equal_masked_model(family, build, n_layers) -> None:
    model = build()
    keep_n = random_keep(n_layers, 48, 0.4, 1)
    keep_h = [torch.tensor([True, False, True, False]), torch.tensor([False, False, False, True])]
    keep_h += [torch.tensor([True] * 4)] * (n_layers - 2)
    module = structured_mask(model, family, keep_n, keep_h)
    small = extract_module(model, module)
    assert small.config.ffn_sizes == [int(k.sum()) for k in keep_n]
    assert small.config.head_counts == [int(k.sum()) for k in keep_h]
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ref = masked_copy(model, module)(**inputs()).logits
        got = small(**inputs()).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_reload_from_pretrained_and_remote_code(tmp_path) -> None:
    model = tiny_bert()
    module = structured_mask(model, "bert", random_keep(3, 48, 0.5, 2), random_keep(3, 4, 0.6, 3))
    small = extract_module(model, module)
    out = save_extracted(small, tmp_path / "small")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "modularevo_pruned_bert"
    assert "AutoModelForSequenceClassification" in cfg["auto_map"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs()).logits, small(**inputs()).logits)


@pytest.mark.slow
def test_reload_with_remote_code_without_modularevo(tmp_path) -> None:
    model = tiny_bert()
    module = structured_mask(model, "bert", random_keep(3, 48, 0.5, 2), random_keep(3, 4, 0.6, 3))
    small = extract_module(model, module)
    out = save_extracted(small, tmp_path / "small")
    # a fresh interpreter without modularevo loads it through the copied code file
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
        f"m = A.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert 'modularevo' not in sys.modules\n"
        "print(m.config.head_counts)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == str(small.config.head_counts)


def test_gptneo_reload_causal_lm(tmp_path) -> None:
    model = tiny_gptneo()
    module = structured_mask(
        model, "gpt_neo", random_keep(2, 48, 0.3, 4), random_keep(2, 4, 0.5, 5)
    )
    small = extract_module(model, module)
    reloaded = AutoModelForCausalLM.from_pretrained(save_extracted(small, tmp_path / "neo")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs()).logits, small(**inputs()).logits)


def test_layer_with_no_heads_and_no_neurons() -> None:
    model = tiny_bert()
    none_n = torch.zeros(48, dtype=torch.bool)
    none_h = torch.zeros(4, dtype=torch.bool)
    module = structured_mask(model, "bert", [none_n, *random_keep(2, 48, 0.5, 6)], [none_h] * 3)
    small = extract_module(model, module)
    assert small.config.ffn_sizes[0] == 0
    assert small.config.head_counts == [1, 1, 1]  # one zero-output head kept per layer
    with torch.no_grad():
        ref = masked_copy(model, module)(**inputs()).logits
        torch.testing.assert_close(small(**inputs()).logits, ref, atol=1e-5, rtol=1e-5)


def test_weights_only_mask_drops_units_via_down_columns() -> None:
    """Masks on weights only (biases kept): the down / o columns decide, still exact."""
    model = tiny_bert()
    full = structured_mask(model, "bert", random_keep(3, 48, 0.5, 7), random_keep(3, 4, 0.5, 8))
    module = ModuleMask(masks={n: m for n, m in full.masks.items() if n.endswith("weight")})
    small = extract_module(model, module)
    assert small.config.ffn_sizes == plan_extraction(model, full).ffn_sizes
    with torch.no_grad():
        ref = masked_copy(model, module)(**inputs()).logits
        torch.testing.assert_close(small(**inputs()).logits, ref, atol=1e-5, rtol=1e-5)


def test_unstructured_mask_is_rejected_with_tensor_name() -> None:
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    module = ModuleMask(masks={name: torch.rand(48, 32, generator=g) < 0.7})
    with pytest.raises(InputError, match=r"layer\.1\.output\.dense\.weight.*partly kept"):
        extract_module(model, module)


def test_residue_outside_units_strict_and_lenient() -> None:
    model = tiny_bert()
    module = structured_mask(model, "bert", random_keep(3, 48, 0.5, 9), random_keep(3, 4, 0.5, 1))
    cls = torch.ones(3, 32, dtype=torch.bool)
    cls[0, :5] = False
    module = ModuleMask(masks={**module.masks, "classifier.weight": cls})
    with pytest.raises(InputError, match=r"'classifier\.weight' has 5 masked-out"):
        extract_module(model, module)
    small = extract_module(model, module, strict=False)
    assert plan_extraction(model, module, strict=False).residue == {"classifier.weight": 5}
    with torch.no_grad():
        ref = masked_copy(model, module)(**inputs()).logits
        torch.testing.assert_close(small(**inputs()).logits, ref, atol=1e-5, rtol=1e-5)


def test_unsupported_family_and_gqa() -> None:
    with pytest.raises(InputError, match="supports model types"):
        extract_module(nn.Linear(2, 2), ModuleMask(masks={}))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=48,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    keep_h = torch.tensor([True, True, True, False]).repeat_interleave(8)
    module = ModuleMask(
        masks={"model.layers.0.self_attn.o_proj.weight": keep_h.expand(32, 32).clone()}
    )
    # under GQA a whole key/value group is the unit removed: query head 3 dropped alone
    # stays (zero output columns) with its group; half a head is refused
    small = extract_module(model, module)
    assert small.config.head_counts == [4]
    half = keep_h.clone()
    half[4] = False
    bad = ModuleMask(masks={"model.layers.0.self_attn.o_proj.weight": half.expand(32, 32).clone()})
    with pytest.raises(InputError, match=r"1 attention head\(s\) \[0\] are partly kept"):
        extract_module(model, bad)


def test_wrapped_classifier_backbone_is_pruned() -> None:
    class Wrapper(nn.Module):
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone, self.config = backbone, backbone.config
            self.classifier = nn.Linear(32, 2)

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.classifier(h.mean(1))

    model = Wrapper(tiny_bert().bert).eval()
    inner = structured_mask(
        model.backbone, "bert", random_keep(3, 48, 0.4, 3), random_keep(3, 4, 0.5, 4)
    )
    module = ModuleMask(masks={f"backbone.{n}": m for n, m in inner.masks.items()})
    small = extract_module(model, module)
    assert type(small.backbone).__name__ == "PrunedBertModel"
    with torch.no_grad():
        ref = masked_copy(model, module)(**inputs())
        torch.testing.assert_close(small(**inputs()), ref, atol=1e-5, rtol=1e-5)
