"""Module analysis: density per layer, overlaps, random twins, loss report and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from modularevo.models.arch import describe
from modularevo.modules.analysis import (
    analyze_modules,
    density_per_layer,
    domain_loss,
    random_twin,
)
from modularevo.modules.io import save_module
from modularevo.modules.layers import maskable_params
from modularevo.modules.mask import ModuleMask, fingerprint


def test_density_per_layer_pools_weight_and_bias() -> None:
    m = ModuleMask(masks={
        "a.weight": torch.tensor([[True, False], [False, False]]),
        "a.bias": torch.tensor([True, True]),
        "b.weight": torch.tensor([False, False]),
    })  # fmt: skip
    assert density_per_layer(m) == {"a": pytest.approx(3 / 6), "b": 0.0}


def test_random_twin_keeps_count_per_parameter_but_moves_entries() -> None:
    g = torch.Generator().manual_seed(0)
    masks = {"w": torch.rand(40, 50, generator=g) < 0.3, "b": torch.rand(50, generator=g) < 0.7}
    module = ModuleMask(masks=masks, domain="math")
    twin = random_twin(module, torch.Generator().manual_seed(1))
    for n, m in masks.items():
        assert int(twin.masks[n].sum()) == int(m.sum())
    assert module.overlap(twin)["jaccard"] < 0.5


def _tiny() -> BertForMaskedLM:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    return BertForMaskedLM(cfg).eval()


def test_domain_loss_with_full_mask_equals_dense_and_model_unchanged() -> None:
    model = _tiny()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids, "labels": ids}]
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    full = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    empty = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in names}
    dense = float(model(input_ids=ids, labels=ids).loss)
    assert domain_loss(model, batches, masks=full) == pytest.approx(dense, rel=1e-6)
    assert domain_loss(model, batches, masks=empty) != pytest.approx(dense)
    assert float(model(input_ids=ids, labels=ids).loss) == pytest.approx(dense)


def test_analyze_modules_report_and_plots(tmp_path: Path) -> None:
    model = _tiny()
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    paths = []
    for dom in ("math", "law"):
        masks = {n: torch.rand(params[n].shape, generator=g) < 0.5 for n in names}
        covered = [(n, params[n]) for n in names]
        module = ModuleMask(masks=masks, domain=dom, base_fingerprint=fingerprint(covered),
                            metadata={"level": 0.5})  # fmt: skip
        paths.append(save_module(module, tmp_path / dom / "module-0.5.safetensors"))
    ids = torch.randint(0, 64, (2, 8), generator=g)
    report = analyze_modules(paths, out_dir=tmp_path / "an", model=model,
                             batches_for=lambda m: [{"input_ids": ids, "labels": ids}])  # fmt: skip
    entry = report["modules"]["math@0.5"]
    assert set(entry["loss"]) == {"dense", "module", "random_twin", "module_minus_twin"}
    assert 0.4 < entry["density"] < 0.6
    assert 0.2 < report["overlap"]["math@0.5"]["law@0.5"]["jaccard"] < 0.45
    saved = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert saved["modules"].keys() == report["modules"].keys()
    for png in ("density.png", "overlap.png", "loss.png"):
        assert (tmp_path / "an" / png).stat().st_size > 1000
