"""Sparse storage (disk ∝ density) and sparse-kernel inference of unstructured modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from modularevo.deploy.sparse import (
    SparseLinear,
    dense_state,
    load_sparse,
    save_sparse,
    sparse_state,
    sparsify_linears,
)
from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=40, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=2, max_position_embeddings=16,
    )  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def random_module(model: nn.Module, density: float, seed: int = 0) -> ModuleMask:
    g = torch.Generator().manual_seed(seed)
    masks = {
        n: torch.rand(p.shape, generator=g) < density
        for n, p in model.named_parameters()
        if n.startswith("bert.encoder") and n.endswith("dense.weight")
    }
    return ModuleMask(masks=masks)


def test_sparse_state_roundtrip_hand_checked() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = torch.tensor([[True, False], [False, True]])
    sp = sparse_state({"w": w, "b": torch.ones(2)}, ModuleMask(masks={"w": m}))
    assert sp["w::values"].tolist() == [1.0, 4.0]
    assert sp["w::mask"].tolist() == [0b1001]  # little bit order, row-major
    back = dense_state(sp, {"w": [2, 2]})
    assert back["w"].tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert back["b"].tolist() == [1.0, 1.0]


def test_disk_size_scales_with_density(tmp_path) -> None:
    model = tiny_bert()
    sizes = {}
    for d in (0.1, 0.5, 0.9):
        module = random_module(model, d)
        sizes[d] = save_sparse(model, module, tmp_path / f"m{d}.safetensors").stat().st_size
    masked_numel = random_module(model, 0.5).numel
    # 4 bytes per kept value: sizes grow by ~4 * numel * Δdensity
    slope = (sizes[0.9] - sizes[0.1]) / (0.8 * masked_numel)
    assert 3.8 < slope < 4.2
    assert sizes[0.1] < sizes[0.5] < sizes[0.9]


def test_load_sparse_gives_masked_model(tmp_path) -> None:
    model = tiny_bert()
    module = random_module(model, 0.3)
    path = save_sparse(model, module, tmp_path / "m.safetensors")
    ref = copy.deepcopy(model)
    module.apply_(dict(ref.named_parameters()))
    state = load_sparse(path)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(state[k], v)


def test_sparse_linear_matches_dense() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(32, 48)
    lin.weight.data[torch.rand(48, 32) < 0.8] = 0
    x = torch.randn(3, 5, 32)
    for layout in ("csr", "bsr"):
        sp = SparseLinear(lin.weight, lin.bias, layout=layout)
        torch.testing.assert_close(sp(x), lin(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="layout"):
        SparseLinear(lin.weight, lin.bias, layout="coo")


def test_sparsified_model_logits_equal_masked() -> None:
    model = tiny_bert()
    module = random_module(model, 0.25)
    ref = copy.deepcopy(model)
    module.apply_(dict(ref.named_parameters()))
    n = sparsify_linears(model, module)
    assert n == len(module.masks)
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_load_rejects_other_files(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.ones(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(InputError, match="not a sparse module file"):
        load_sparse(tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        load_sparse(tmp_path / "nope.safetensors")
