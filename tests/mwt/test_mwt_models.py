"""Gated CNNs and their physically smaller modules (``shrink``)."""

from collections.abc import Mapping

import pytest
import torch
from torch import Tensor, nn

from modularevo.errors import InputError, UnknownNameError
from modularevo.mwt.layers import GatedConv, MaskGenerator, slice_gated
from modularevo.mwt.models import CNN_MODELS, build_model, gated_layers
from modularevo.mwt.reuse import compose_module

TINY = ["test_vgg", "test_resnet"]


def _eval_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5)
    _randomise_bn(model)
    return model.eval()


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so that slicing mistakes show up in the logits."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)


def _random_keep(model: nn.Module, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for name, layer in gated_layers(model).items():
        ids = torch.randperm(layer.kernels, generator=g)[: max(1, layer.kernels // 2)]
        keep[name] = ids.sort().values
    return keep


@pytest.mark.parametrize("name", CNN_MODELS.names())
def test_every_model_returns_logits_and_one_gate_per_gated_layer(name: str) -> None:
    model = build_model(name, num_classes=7)
    with torch.no_grad():
        logits, gates = model(torch.randn(3, 1, 8, 8))
    assert logits.shape == (3, 7)
    layers = gated_layers(model)
    assert [g.shape for g in gates] == [(3, layer.kernels) for layer in layers.values()]
    assert all(float(g.min()) >= 0 and float(g.max()) < 1 for g in gates)


def test_gates_start_almost_all_on() -> None:
    gen = MaskGenerator(4, 16)
    gates = gen(torch.randn(32, 4, 5, 5))
    assert float((gates > 0).float().mean()) > 0.7  # b2 = 1 -> tanh(1) ~ 0.76 on average


@pytest.mark.parametrize("name", TINY)
def test_module_with_all_kernels_equals_full_model_on_its_classes(name: str) -> None:
    model = _eval_model(name)
    keep = {n: torch.arange(layer.kernels) for n, layer in gated_layers(model).items()}
    module = compose_module(model, keep, [3, 0, 4])
    x = torch.randn(6, 1, 8, 8)
    full, _ = model(x)
    small, _ = module(x)
    torch.testing.assert_close(small, full[:, [3, 0, 4]], rtol=1e-5, atol=1e-5)


def _zero_gates_outside(model: nn.Module, keep: Mapping[str, Tensor]) -> list:
    handles = []
    for name, layer in gated_layers(model).items():
        on = torch.zeros(layer.kernels)
        on[keep[name]] = 1.0
        assert layer.gate is not None
        handles.append(layer.gate.register_forward_hook(lambda m, i, out, on=on: out * on))
    return handles


@pytest.mark.parametrize("name", TINY)
def test_smaller_module_equals_full_model_with_dropped_kernels_switched_off(name: str) -> None:
    model = _eval_model(name)
    keep = _random_keep(model, seed=1)
    module = compose_module(model, keep, [1, 2])
    n_full = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in module.parameters()) < n_full  # physically smaller
    x = torch.randn(4, 1, 8, 8)
    small, _ = module(x)
    handles = _zero_gates_outside(model, keep)
    full, _ = model(x)
    for h in handles:
        h.remove()
    torch.testing.assert_close(small, full[:, [1, 2]], rtol=1e-5, atol=1e-5)


def test_module_without_gates_has_no_generators() -> None:
    model = _eval_model("test_vgg")
    keep = _random_keep(model, seed=2)
    module = compose_module(model, keep, [0], keep_gates=False)
    assert not gated_layers(module)
    logits, gates = module(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 1)
    assert gates == []


def test_slice_gated_rejects_empty_or_out_of_range_indices() -> None:
    layer = GatedConv(4, 6)
    with pytest.raises(ValueError, match=r"out_index must hold 1\.\.6"):
        slice_gated(layer, in_index=None, out_index=torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match=r"in_index .* got \[4\]"):
        slice_gated(layer, in_index=torch.tensor([4]), out_index=None)


def test_compose_module_errors_name_the_problem() -> None:
    model = _eval_model("test_vgg")
    keep = {n: torch.arange(layer.kernels) for n, layer in gated_layers(model).items()}
    with pytest.raises(InputError, match=r"unknown class id\(s\) \[9\]"):
        compose_module(model, keep, [0, 9])
    with pytest.raises(InputError, match="class list is empty"):
        compose_module(model, keep, [])
    with pytest.raises(InputError, match="no kernel ids for gated layer"):
        compose_module(model, {}, [0])


def test_unknown_model_name_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'test_vgg'"):
        build_model("test_vgx", num_classes=3)
