"""CART, PCB and OPCM on hand-computed tensors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import save_file

from modularevo.merging import MERGE_METHODS
from modularevo.merging.apply import merge
from modularevo.merging.continual import ContinualOpcm
from modularevo.merging.in_memory import merge_state_dicts
from modularevo.merging.methods.cart import cart_rank
from modularevo.merging.methods.opcm import OpcmState, project_away, split_rank
from modularevo.merging.methods.pcb import drop_weights


def _call(name: str, taus: list[torch.Tensor], base: torch.Tensor, **params) -> torch.Tensor:
    spec = MERGE_METHODS.get(name)
    models = [base + t for t in taus]
    return spec.fn(models, base, generators=None, masks=None, thresholds=None, **params)


def _rand(k: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), [torch.randn(shape, generator=g) for _ in range(k)]


# --- CART ---------------------------------------------------------------------------


def test_cart_adds_each_centred_task_cut_to_rank_one():
    base = torch.ones(2, 2)
    taus = [torch.diag(torch.tensor([3.0, 0.0])), torch.diag(torch.tensor([0.0, 3.0])),
            torch.diag(torch.tensor([1.5, 0.0]))]  # fmt: skip
    # mean diag(1.5, 1); centred diag(1.5, -1), diag(-1.5, 2), diag(0, -1) -> rank 1:
    # diag(1.5, 0), diag(0, 2), diag(0, -1); their sum diag(1.5, 1)
    out = _call("cart", taus, base, rank_fraction=0.5)
    torch.testing.assert_close(out, base + torch.diag(torch.tensor([3.0, 2.0])))
    half = _call("cart", taus, base, rank_fraction=0.5, **{"lambda": 0.5})
    torch.testing.assert_close(half, base + torch.diag(torch.tensor([2.25, 1.5])))


def test_cart_at_full_rank_or_with_two_tasks_is_weight_averaging():
    base, taus = _rand(3, (6, 5))
    mean = base + torch.stack(taus).mean(dim=0)
    torch.testing.assert_close(_call("cart", taus, base, rank_fraction=1.0), mean)
    # two tasks: c_2 = -c_1, and the truncated SVD is odd, so the low-rank parts cancel
    torch.testing.assert_close(_call("cart", taus[:2], base, rank_fraction=0.2),
                               base + (taus[0] + taus[1]) / 2)  # fmt: skip
    assert not torch.allclose(_call("cart", taus, base, rank_fraction=0.2), mean, atol=1e-3)


def test_cart_averages_vectors_and_rounds_its_rank():
    out = _call("cart", [torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0]),
                         torch.tensor([2.0, 5.0])], torch.zeros(2), rank_fraction=0.1)  # fmt: skip
    torch.testing.assert_close(out, torch.tensor([2.0, 3.0]))
    assert cart_rank((768, 3072), 0.08) == 61
    assert cart_rank((4, 4), 0.01) == 1


# --- PCB ----------------------------------------------------------------------------


def test_pcb_drops_the_entries_where_tasks_compete():
    # agreeing entries score tanh(2)e^2 in both tasks; on the conflicting half task 1
    # scores tanh(0.5) and task 2 tanh(-0.25): with density 0.5 both keep the agreeing half
    t1 = torch.ones(8)
    t2 = torch.tensor([1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5])
    out = _call("pcb", [t1, t2], torch.zeros(8), density=0.5)
    torch.testing.assert_close(out, torch.tensor([1.0] * 4 + [0.0] * 4))
    assert not torch.equal(out, (t1 + t2) / 2)  # what averaging keeps instead


def test_pcb_one_task_keeps_its_top_entries_with_the_largest_clamped():
    # |τ| is clamped at its sorted position int(4·0.9999) - 1 = 2 (0.3), so the intra
    # scores of the last two tie, but the inter score tanh(τ²) uses the unclamped τ:
    # scores rise with |τ|; with density 0.5 the cut q is the third score, which gets
    # weight 0; the last entry keeps weight 1 and its clamped value -0.3
    tau = torch.tensor([0.1, -0.2, 0.3, -0.4])
    out = _call("pcb", [tau], torch.ones(4), density=0.5, **{"lambda": 2.0})
    torch.testing.assert_close(out, torch.ones(4) + 2 * torch.tensor([0.0, 0.0, 0.0, -0.3]))


def test_pcb_drop_weights_follow_the_reference_minmax():
    score = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    # q = sorted[int(4 · 0.5)] = 2: (max(β, 2) - 2) / (4 - 2)
    torch.testing.assert_close(drop_weights(score, 0.5), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(drop_weights(score, 1.0), torch.tensor([[0.0, 0.25, 0.5, 1.0]]))
    assert not drop_weights(score, 0.0).any()


def test_pcb_density_zero_gives_base_and_ties_give_the_mean():
    base, taus = _rand(3, (4, 4))
    torch.testing.assert_close(_call("pcb", taus, base, density=0.0), base)
    one = [torch.tensor([2.0]), torch.tensor([4.0])]  # one entry per task: everything ties
    torch.testing.assert_close(_call("pcb", one, torch.zeros(1)), torch.tensor([3.0]))


# --- OPCM ---------------------------------------------------------------------------


def test_opcm_split_rank_is_the_first_index_past_alpha():
    s = torch.tensor([3.0, 2.0, 1.0])  # cumulative shares 0.5, 0.83, 1
    assert [split_rank(s, a) for a in (0.4, 0.6, 0.9, 1.0)] == [0, 1, 2, 0]


def test_opcm_projection_removes_the_diagonal_and_the_dominant_block():
    merged = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    tau = torch.ones(3, 3)
    keep_cross = torch.ones(3, 3) - torch.eye(3)
    torch.testing.assert_close(project_away(merged, tau, 0.6), keep_cross)  # split 1
    expected = keep_cross.clone()
    expected[0, 1] = expected[1, 0] = 0.0  # split 2: the cross terms of the top two go too
    torch.testing.assert_close(project_away(merged, tau, 0.9), expected)
    assert torch.equal(project_away(torch.zeros(3, 3), tau, 0.5), tau)


def test_opcm_rescales_the_running_sum_to_the_mean_norm():
    base = torch.zeros(2)
    out = _call("opcm", [torch.tensor([3.0, 4.0]), torch.tensor([6.0, 8.0])], base)
    torch.testing.assert_close(out, torch.tensor([4.5, 6.0]))  # [9, 12] * 7.5 / 15
    merged, tau = torch.diag(torch.tensor([3.0, 2.0, 1.0])), torch.ones(3, 3)
    raw = merged + torch.ones(3, 3) - torch.eye(3)
    mean_norm = (math.sqrt(14.0) + 3.0) / 2
    out = _call("opcm", [merged, tau], torch.zeros(3, 3), alpha=0.6)
    torch.testing.assert_close(out, raw * mean_norm / raw.norm())


@pytest.mark.parametrize("shape", [(6, 4), (5,)])
def test_opcm_one_model_at_a_time_gives_the_merge_of_all(shape):
    base, taus = _rand(4, shape, seed=3)
    state = OpcmState.start(taus[0])
    for tau in taus[1:]:
        state = state.add(tau, 0.5)  # only the running tensor and two numbers are kept
    torch.testing.assert_close(base + state.delta(), _call("opcm", taus, base))
    assert state.tasks == 4


def test_continual_opcm_rescales_with_whole_model_norms():
    g = torch.Generator().manual_seed(5)
    base = {"w": torch.randn(5, 4, generator=g), "b": torch.randn(4, generator=g),
            "head": torch.randn(2, generator=g)}  # fmt: skip
    models = [{n: t + torch.randn(t.shape, generator=g) for n, t in base.items()} for _ in range(3)]
    merger = ContinualOpcm(base, alpha=0.5, exclude=lambda n: n == "head")
    for m in models:
        merger.add(m)
    out = merger.merged(lam=0.5)
    assert torch.equal(out["head"], base["head"])
    taus = [{n: m[n] - base[n] for n in ("w", "b")} for m in models]
    raw = {}
    for n in ("w", "b"):
        st = OpcmState.start(taus[0][n])
        for tv in taus[1:]:
            st = st.add(tv[n], 0.5)
        raw[n] = st.merged
    whole = [math.sqrt(sum(float(t.pow(2).sum()) for t in tv.values())) for tv in taus]
    raw_norm = math.sqrt(sum(float(t.pow(2).sum()) for t in raw.values()))
    for n in ("w", "b"):
        want = base[n] + 0.5 * raw[n] * (sum(whole) / 3) / raw_norm
        torch.testing.assert_close(out[n], want)
    # per tensor, the registered method rescales each tensor by its own norms instead
    per_tensor = MERGE_METHODS.get("opcm").fn([m["w"] for m in models], base["w"])
    assert not torch.allclose(per_tensor, base["w"] + 2 * (out["w"] - base["w"]), atol=1e-4)


@pytest.mark.parametrize(
    ("method", "params"),
    [("cart", {"rank_fraction": 0.5, "lambda": 0.8}), ("pcb", {"density": 0.3}),
     ("opcm", {"alpha": 0.4})],
)  # fmt: skip
def test_a_recipe_merges_as_the_in_memory_merge(tmp_path, method, params):
    g = torch.Generator().manual_seed(11)
    base = {"layer.w": torch.randn(6, 4, generator=g), "layer.b": torch.randn(6, generator=g),
            "norm.weight": torch.ones(4)}  # fmt: skip
    models = [{n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in base.items()}
              for _ in range(3)]  # fmt: skip
    for name, sd in [("base", base), *((f"m{i}", m) for i, m in enumerate(models))]:
        (tmp_path / name).mkdir()
        save_file(sd, str(tmp_path / name / "model.safetensors"))
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "toy"}))
    weights = [0.5, 0.7, 0.9]
    recipe = {"merge_method": method, "base_model": str(tmp_path / "base"), "dtype": "float32",
              "parameters": params,
              "models": [{"model": str(tmp_path / f"m{i}"), "parameters": {"weight": w}}
                         for i, w in enumerate(weights)]}  # fmt: skip
    merge(recipe, tmp_path / "out", progress=False)
    got = read_output(tmp_path / "out")
    want = merge_state_dicts(base, models, method, {**params, "weight": weights})
    for n, t in want.items():
        torch.testing.assert_close(got[n], t, msg=n)
    assert not torch.allclose(got["layer.w"], base["layer.w"])
