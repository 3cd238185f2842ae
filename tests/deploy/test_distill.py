"""Distillation: zero extra loss when student == teacher; training lowers it; it composes
with an extracted module and with gates."""

from __future__ import annotations

import copy

import pytest
import torch
from deploy_helpers import batches, toy_bert, toy_task, train
from test_gates import _random_keep

from modularevo.deploy.extract import extract_module
from modularevo.errors import InputError
from modularevo.models.arch import describe
from modularevo.training.distill import DistillConfig, Distiller, distill_terms
from modularevo.training.structured_gates import GatedModel, GatesConfig, unit_module

torch.set_num_threads(1)
TRAIN = toy_task(512, seed=0)
CFG = DistillConfig(temperature=2.0, ce_weight=0.0, kl_weight=1.0, hidden_weight=1.0)


def _teacher() -> torch.nn.Module:
    model = toy_bert()
    train(model, TRAIN, steps=60, lr=3e-3)
    return model


def _batch(n: int = 16) -> dict[str, torch.Tensor]:
    return next(batches(TRAIN, batch=n, seed=3))


def test_loss_is_zero_when_student_is_teacher() -> None:
    teacher = _teacher()
    d = Distiller(copy.deepcopy(teacher), teacher, CFG).train()
    loss = d(**_batch()).loss
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert d.last_terms["kl"] == pytest.approx(0.0, abs=1e-6)
    # the control: a different student gives a clearly positive loss
    other = Distiller(toy_bert(seed=1), teacher, CFG).train()
    assert float(other(**_batch()).loss) > 1e-2
    assert other.last_terms["hidden_mse"] > 1e-2


def _hooked(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_a_teacher_taught_twice_keeps_no_block_outputs_and_close_removes_the_hooks() -> None:
    teacher = _teacher()
    first = Distiller(copy.deepcopy(teacher), teacher, CFG).train()
    first(**_batch())
    student = first.student.eval()
    second = Distiller(toy_bert(seed=1), teacher, CFG).train()
    for _ in range(3):  # the teacher runs under the second wrapper, the student alone
        second(**_batch())
        student(**_batch())
    stale = [c for c in first._capture.values() if c is not None]
    assert [len(c.outputs) for c in stale] == [0, 0]  # recorded nothing outside its steps
    assert _hooked(teacher) == 2 * len(describe(teacher).layers)
    first.close()
    second.close()
    assert _hooked(teacher) == 0
    assert _hooked(student) == 0


def test_terms_ignore_padding_and_scale_with_temperature() -> None:
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    hs, ht = torch.randn(4, 5, 8), torch.randn(4, 5, 8)
    mask = torch.ones(4, 5)
    mask[:, 3:] = 0
    ht_padded = ht.clone()
    ht_padded[:, 3:] += 100.0  # differences on padding do not count
    _, a = distill_terms(s, t, [hs], [ht], temperature=1.0, attention_mask=mask)
    _, b = distill_terms(s, t, [hs], [ht_padded], temperature=1.0, attention_mask=mask)
    torch.testing.assert_close(a, b)
    kl1, _ = distill_terms(s, t, [], [], temperature=1.0)
    assert float(kl1) > 0


def test_training_reduces_the_distillation_loss() -> None:
    teacher = _teacher()
    keep = {u: torch.ones(n, dtype=torch.bool) for u, n in GatedModel.wrap(
        copy.deepcopy(teacher), GatesConfig(), total_steps=1).gates.units.items()}  # fmt: skip
    keep = _random_keep(
        {u: k & (torch.arange(k.numel()) < k.numel() // 2) for u, k in keep.items()}, 0
    )
    module = unit_module(describe(teacher), dict(teacher.named_parameters()), keep, domain="half")
    student = extract_module(teacher, module).train()
    d = Distiller(student, teacher, CFG)
    held_out = _batch(64)
    before = float(d.train()(**held_out).loss)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    for _, b in zip(range(40), batches(TRAIN, batch=32, seed=5), strict=False):
        d(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    after = float(d(**held_out).loss)
    assert after < 0.7 * before, (before, after)
    assert list(dict(d.named_parameters())) == [
        f"student.{n}" for n, _ in student.named_parameters()
    ]


def test_depth_mismatch_is_refused() -> None:
    with pytest.raises(InputError, match="blocks"):
        Distiller(toy_bert(), toy_bert(), CFG.model_copy(update={"layers": [0, 5]}))
