"""EMoEFFN: equals the dense FFN at k = E, the masked dense FFN at k < E; avg-k gates."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from modularevo.emoe.convert import permute_ffn_
from modularevo.emoe.layer import EMoEFFN, ffn_keys
from modularevo.errors import InputError

D, DFF, E = 6, 12, 4  # expert size 3


def _ffn(seed: int = 0) -> tuple[nn.Linear, nn.GELU, nn.Linear]:
    torch.manual_seed(seed)
    return nn.Linear(D, DFF), nn.GELU(), nn.Linear(DFF, D)


def _x(n: int = 5) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(7))


def test_all_experts_is_exactly_dense():
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=E).eval()
    x = _x()
    assert torch.equal(layer(x), down(act(up(x))))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_is_dense_with_other_groups_zeroed(k):
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=k).eval()
    x = _x()
    with torch.no_grad():
        pre = x @ up.weight.T + up.bias  # (n, d_ff)
        logits = (pre - up.bias).reshape(len(x), E, DFF // E).mean(-1)  # mean pre-activation
        expected = []
        for t in range(len(x)):
            keep = torch.zeros(DFF)
            for e in logits[t].argsort(descending=True)[:k].tolist():
                keep[e * 3 : (e + 1) * 3] = 1.0
            h = torch.nn.functional.gelu(pre[t]) * keep
            expected.append(down.weight @ h + down.bias)  # output bias added once
        torch.testing.assert_close(layer(x), torch.stack(expected))


def test_avg_k_logit_is_mean_pre_activation_without_bias():
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=2)
    x = _x()
    pre = (up(x) - up.bias).reshape(len(x), E, DFF // E).mean(-1)
    torch.testing.assert_close(layer.router_logits(x), pre.detach())


def test_training_refresh_follows_keys_and_eval_does_not():
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=2)
    with torch.no_grad():
        up.weight.mul_(2.0)
    old = layer.gates.clone()
    layer.eval()(_x())
    assert torch.equal(layer.gates, old)  # eval: gates untouched
    layer.train()(_x())
    torch.testing.assert_close(layer.gates, 2.0 * old)  # train: mean of current keys
    layer.refresh = False
    with torch.no_grad():
        up.weight.mul_(3.0)
    layer(_x())
    torch.testing.assert_close(layer.gates, 2.0 * old)


def test_refresh_momentum_and_normalize():
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=2)
    old = layer.gates.clone()
    with torch.no_grad():
        up.weight.mul_(3.0)
    layer.refresh_gates(momentum=0.5)
    torch.testing.assert_close(layer.gates, 2.0 * old)  # 0.5 * old + 0.5 * 3 old
    layer.refresh_gates(normalize=True)
    torch.testing.assert_close(layer.gates.norm(dim=1), torch.ones(E))


def test_no_gradient_to_gates_or_unselected_experts():
    up, act, down = _ffn()
    layer = EMoEFFN.plain(up, act, down, n_experts=E, top_k=1).train()
    x = _x(1).requires_grad_(True)
    layer(x).sum().backward()
    chosen = int(layer.router_logits(x).argmax())
    grad = up.weight.grad.reshape(E, DFF // E, D)
    assert grad[chosen].abs().sum() > 0
    assert all(grad[e].abs().sum() == 0 for e in range(E) if e != chosen)
    assert not layer.gates.requires_grad
    assert "gates" not in layer.state_dict()  # not saved as a weight; dense keys unchanged


def test_conv1d_keys_and_permutation_keep_function():
    torch.manual_seed(0)
    up, down = Conv1D(DFF, D), Conv1D(D, DFF)  # GPT-2 layout: weight (in, out)
    for p in (up.bias, down.bias):
        nn.init.normal_(p)
    assert ffn_keys(up).shape == (DFF, D)
    x = _x()
    before = down(torch.relu(up(x)))
    perm = torch.randperm(DFF)
    keys = ffn_keys(up).clone()
    permute_ffn_(up, down, perm)
    torch.testing.assert_close(ffn_keys(up), keys[perm])
    torch.testing.assert_close(down(torch.relu(up(x))), before)


def test_bad_layer_inputs_raise_clear_errors():
    up, act, down = _ffn()
    with pytest.raises(InputError, match="into 5 equal-size experts"):
        EMoEFFN.plain(up, act, down, n_experts=5, top_k=1)
    with pytest.raises(InputError, match=r"top_k must be in \[1, 4\]"):
        EMoEFFN.plain(up, act, down, n_experts=E, top_k=5)
    with pytest.raises(InputError, match=r"gates must be \(E, 6\)"):
        EMoEFFN(
            {"up": up, "act": act, "down": down},
            layout=EMoEFFN.plain(up, act, down, n_experts=E, top_k=1).layout,
            gates=torch.zeros(E, 5),
            top_k=1,
        )
    with pytest.raises(InputError, match="no dense module"):
        EMoEFFN.plain(up, act, down, n_experts=E, top_k=1).to_dense()
