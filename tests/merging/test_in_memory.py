"""In-memory merge: hand-checked tensors, excluded heads, masks, seeded randomness."""

from __future__ import annotations

import torch

from modularevo.merging.in_memory import merge_state_dicts, task_vector_norms


def _sd(w: list[float], head: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        "enc.weight": torch.tensor(w),
        "classifier.weight": torch.tensor([head]),
        "ids": torch.tensor([1, 2]),
    }


def test_task_arithmetic_matches_hand_formula_and_keeps_heads_at_base() -> None:
    base = _sd([1.0, 1.0])
    m1, m2 = _sd([2.0, 1.0], head=5.0), _sd([1.0, 3.0], head=7.0)
    out = merge_state_dicts(
        base,
        [m1, m2],
        "task_arithmetic",
        {"weight": [0.5, 0.25]},
        exclude=lambda n: n.startswith("classifier"),
    )
    # 1 + 0.5*(1, 0) + 0.25*(0, 2) = (1.5, 1.5)
    assert torch.allclose(out["enc.weight"], torch.tensor([1.5, 1.5]))
    assert out["classifier.weight"] is base["classifier.weight"]
    assert torch.equal(out["ids"], base["ids"])


def test_modularevo_restricts_each_task_vector_to_its_mask() -> None:
    base = _sd([0.0, 0.0, 0.0])
    m1, m2 = _sd([1.0, 1.0, 1.0]), _sd([2.0, 2.0, 2.0])
    masks = [
        {"enc.weight": torch.tensor([True, False, False])},
        {"enc.weight": torch.tensor([False, True, False])},
    ]
    out = merge_state_dicts(base, [m1, m2], "modularevo", {"weight": [1.0, 1.0]}, masks=masks)
    assert torch.allclose(out["enc.weight"], torch.tensor([1.0, 2.0, 0.0]))


def test_randomized_methods_depend_on_the_seed_only() -> None:
    torch.manual_seed(0)
    base = {"w": torch.zeros(200)}
    models = [{"w": torch.randn(200)}, {"w": torch.randn(200)}]
    params = {"weight": [1.0, 1.0], "density": 0.5}
    a = merge_state_dicts(base, models, "dare_linear", params, seed=3)
    b = merge_state_dicts(base, models, "dare_linear", params, seed=3)
    c = merge_state_dicts(base, models, "dare_linear", params, seed=4)
    assert torch.equal(a["w"], b["w"])
    assert not torch.equal(a["w"], c["w"])


def test_task_vector_norm() -> None:
    assert task_vector_norms(_sd([0.0, 0.0]), _sd([3.0, 4.0])) == 5.0
