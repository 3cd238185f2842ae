"""Merge methods run from mergekit recipes give mergekit 0.1.5's tensors (hand-computed).

SLERP in mergekit's standard form (the base listed under ``models:``), TIES's minimum
of one kept entry, and DARE / DELLA's L1-norm rescale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from mergekit_zoo import Q1, UP, make_zoo, run_recipe

from modularevo.merging.methods.slerp import slerp_tensors


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    return make_zoo(tmp_path)


def test_slerp_in_mergekits_standard_form_with_the_base_under_models(tmp_path: Path, zoo):
    """mergekit's SLERP example lists the base under ``models:`` too; it used to pass
    validate and fail on the first tensor with three endpoints."""
    p = zoo["paths"]
    out = run_recipe(tmp_path, f"""
merge_method: slerp
base_model: {p["base"]}
models:
  - model: {p["base"]}
  - model: {p["a"]}
parameters:
  t: 0.3
dtype: float32
""")  # fmt: skip
    torch.testing.assert_close(out[Q1], slerp_tensors(0.3, zoo["base"][Q1], zoo["a"][Q1]))


def test_ties_keeps_at_least_one_entry_per_tensor(tmp_path: Path, zoo):
    """int(0.05 · 4) = 0 for a 4-entry norm weight; mergekit 0.1.5 keeps max(1, k)."""
    p = zoo["paths"]
    recipe = {
        "merge_method": "ties", "base_model": p["base"],
        "models": [{"model": p["a"], "parameters": {"weight": 1.0, "density": 0.05}}],
    }  # fmt: skip
    out = run_recipe(tmp_path, recipe)
    n = "model.layers.0.input_layernorm.weight"
    delta = zoo["a"][n] - zoo["base"][n]
    keep = delta.abs() == delta.abs().max()
    torch.testing.assert_close(out[n], zoo["base"][n] + torch.where(keep, delta, 0.0))


@pytest.mark.parametrize("method", ["dare_linear", "della_linear"])
def test_dare_and_della_rescale_matches_the_l1_norm_as_mergekit(tmp_path: Path, zoo, method):
    """mergekit (since v0.1.0; checked on 0.1.5) rescales every sparsifier's survivors to
    the tensor's L1 norm; ``inverse_p`` keeps the papers' 1/p."""
    p = zoo["paths"]
    recipe = {
        "merge_method": method, "base_model": p["base"],
        "models": [{"model": p["a"], "parameters": {"weight": 1.0, "density": 0.5}}],
        "parameters": {"epsilon": 0.1} if method == "della_linear" else {},
    }  # fmt: skip
    out = run_recipe(tmp_path, recipe)
    for n in (UP.format(3), "lm_head.weight"):
        delta = zoo["a"][n] - zoo["base"][n]
        merged = out[n] - zoo["base"][n]
        assert 0 < int((merged != 0).sum()) < delta.numel()
        torch.testing.assert_close(merged.abs().sum(), delta.abs().sum(), rtol=1e-5, atol=0)
    if method == "dare_linear":
        recipe["parameters"] = {"rescale": "inverse_p"}
        out = run_recipe(tmp_path, recipe, "inv")
        n = UP.format(3)
        merged = out[n] - zoo["base"][n]
        kept = merged != 0
        delta = zoo["a"][n] - zoo["base"][n]
        torch.testing.assert_close(merged[kept], delta[kept] / 0.5, rtol=1e-5, atol=1e-6)
