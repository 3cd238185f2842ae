import pytest
import torch

from modularevo.errors import InputError
from modularevo.training.finetune import bits_differ
from modularevo.training.masked_optim import MaskedAdamW, mask_gradients_


def _setup(wd: float):
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 5, generator=g))
    mask = torch.rand(6, 5, generator=g) < 0.3
    opt = MaskedAdamW([w], masks={w: mask}, lr=0.1, weight_decay=wd)
    return w, mask, opt, g


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_out_of_mask_entries_and_moments_stay_bit_identical(wd):
    w, mask, opt, g = _setup(wd)
    before = w.detach().clone()
    for _ in range(5):
        w.grad = torch.randn(6, 5, generator=g)
        opt.step()
    assert not bits_differ(w.detach(), before)[~mask.view(-1)].any()
    assert bits_differ(w.detach(), before)[mask.view(-1)].all()
    state = opt.state[w]
    assert torch.all(state["exp_avg"][~mask] == 0)
    assert torch.all(state["exp_avg_sq"][~mask] == 0)


def test_in_mask_update_matches_torch_adamw():
    g = torch.Generator().manual_seed(1)
    init = torch.randn(4, 4, generator=g)
    grads = [torch.randn(4, 4, generator=g) for _ in range(4)]
    ours = torch.nn.Parameter(init.clone())
    ref = torch.nn.Parameter(init.clone())
    full_mask = torch.ones(4, 4, dtype=torch.bool)
    opt = MaskedAdamW([ours], masks={ours: full_mask}, lr=0.05, weight_decay=0.1)
    ref_opt = torch.optim.AdamW([ref], lr=0.05, weight_decay=0.1)
    for grad in grads:
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_unmasked_parameter_gets_plain_adamw_with_decay():
    a = torch.nn.Parameter(torch.ones(3))
    opt = MaskedAdamW([a], lr=0.1, weight_decay=0.5)
    a.grad = torch.zeros(3)
    opt.step()
    # zero grad: only decoupled decay acts, 1 - lr * wd = 0.95
    torch.testing.assert_close(a.detach(), torch.full((3,), 0.95))


def test_mask_gradients_zeroes_outside_and_keeps_inside():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask_gradients_({p: torch.tensor([[True, False], [False, True]])})
    assert p.grad.tolist() == [[1.0, 0.0], [0.0, 4.0]]


def test_mask_shape_mismatch_is_a_clear_error():
    p = torch.nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(InputError, match="masks must match"):
        MaskedAdamW([p], masks={p: torch.ones(3, 2, dtype=torch.bool)})


def test_bits_differ_sees_signed_zero():
    a = torch.tensor([0.0, 1.0])
    b = torch.tensor([-0.0, 1.0])
    assert bits_differ(a, b).tolist() == [True, False]
