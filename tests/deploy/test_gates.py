"""Hard-concrete gates: they reach the target density, the learned mask beats random masks of
the same size, and the folded model / extracted module compute the gated model's logits."""

from __future__ import annotations

import copy

import pytest
import torch
from deploy_helpers import loss_and_accuracy, toy_bert, toy_task, train
from torch import nn

from modularevo.deploy.extract import extract_module
from modularevo.errors import InputError
from modularevo.models.arch import describe
from modularevo.modules.mask import ModuleMask
from modularevo.training.structured_gates import GatedModel, GatesConfig, unit_module

torch.set_num_threads(1)
TRAIN, VAL = toy_task(512, seed=0), toy_task(256, seed=1)
CFG = GatesConfig(ffn_density=0.25, head_density=0.5, warmup_fraction=0.5)


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    model = toy_bert()
    train(model, TRAIN, steps=80, lr=3e-3)
    return model


@pytest.fixture(scope="module")
def gated(dense: nn.Module) -> GatedModel:
    """Gates only (the weights stay frozen), 200 steps."""
    gm = GatedModel.wrap(copy.deepcopy(dense), CFG, total_steps=200)
    train(gm, TRAIN, steps=200, lr=CFG.lr, params=gm.gates.log_alpha.parameters(), seed=1)
    return gm


def test_gates_start_dense_and_reach_the_target_density(dense: nn.Module, gated: GatedModel):
    start = GatedModel.wrap(copy.deepcopy(dense), CFG, total_steps=200).density()
    assert start["ffn"] > 0.9
    assert start["heads"] > 0.9
    end = gated.density()
    assert end["ffn"] == pytest.approx(0.25, abs=0.03)
    assert end["heads"] == pytest.approx(0.5, abs=0.03)
    for unit, keep in gated.gates.keep().items():  # the final mask: exactly the density
        assert int(keep.sum()) == (16 if unit.startswith("ffn") else 2), unit


def _random_keep(keep: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for unit, k in keep.items():
        r = torch.zeros_like(k)
        r[torch.randperm(k.numel(), generator=g)[: int(k.sum())]] = True
        out[unit] = r
    return out


def test_learned_mask_beats_random_masks_of_the_same_size(dense: nn.Module, gated: GatedModel):
    keep = gated.gates.keep()
    arch, params = describe(dense), dict(dense.named_parameters())
    learned = copy.deepcopy(dense)
    unit_module(arch, params, keep, domain="learned").apply_(dict(learned.named_parameters()))
    loss_l, acc_l = loss_and_accuracy(learned, VAL)
    random = []
    for seed in range(7):
        m = copy.deepcopy(dense)
        unit_module(arch, params, _random_keep(keep, seed), domain="r").apply_(
            dict(m.named_parameters())
        )
        random.append(loss_and_accuracy(m, VAL))
    losses = sorted(r[0] for r in random)
    accs = sorted(r[1] for r in random)
    assert loss_l < losses[3], (loss_l, losses)  # below the median random loss
    assert acc_l >= accs[3], (acc_l, accs)


def test_finalized_and_extracted_models_equal_the_gated_one(gated: GatedModel):
    gm = copy.deepcopy(gated).eval()
    ids, mask, _ = VAL
    with torch.inference_mode():
        want = gm(input_ids=ids, attention_mask=mask).logits
    model, module = gm.finalize()
    small = extract_module(model, module)
    assert small.config.ffn_sizes == [16, 16]
    assert small.config.head_counts == [2, 2]
    with torch.inference_mode():
        folded = model(input_ids=ids, attention_mask=mask).logits
        extracted = small(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(folded, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(extracted, want, atol=1e-5, rtol=0)


def test_training_mode_adds_the_penalty_and_counts_steps(dense: nn.Module):
    gm = GatedModel.wrap(copy.deepcopy(dense), CFG, total_steps=10)
    batch = {"input_ids": VAL[0][:8], "attention_mask": VAL[1][:8], "labels": VAL[2][:8]}
    gm.gates.step.fill_(10)  # past the warm-up: target 0.25, density ~0.99 -> penalty > 0
    plain = dense(**batch).loss
    gm.eval()
    assert gm.gates.penalty() > 1.0
    gm.train()
    torch.manual_seed(0)
    assert float(gm(**batch).loss) > float(plain) + 1.0
    assert int(gm.gates.step) == 11


def test_init_from_a_domain_module(dense: nn.Module):
    arch, params = describe(dense), dict(dense.named_parameters())
    keep = {"ffn:bert.encoder.layer.0": torch.arange(64) < 10,
            "ffn:bert.encoder.layer.1": torch.arange(64) >= 60,
            "heads:bert.encoder.layer.0": torch.tensor([True, False, True, False]),
            "heads:bert.encoder.layer.1": torch.tensor([False, False, False, True])}  # fmt: skip
    module = unit_module(arch, params, keep, domain="domain")
    gm = GatedModel.wrap(copy.deepcopy(dense), CFG, total_steps=10, init_module=module)
    for unit, k in keep.items():
        la = gm.gates.alpha(unit).detach()
        assert torch.equal(la > 0, k), unit
    with pytest.raises(InputError, match="init_module"):
        GatedModel.wrap(dense, CFG, total_steps=1, init_module=ModuleMask(masks={}))
