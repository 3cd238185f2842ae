"""mergekit's ``slices:`` recipes: stacked layer ranges, and merges per slice.

A ``passthrough`` frankenmerge renumbers the layers; SLERP over slices equals the
``models:`` form; each slice is merged on its own, with gradients over its layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mergekit_zoo import LAYERS, make_zoo, run_recipe

from modularevo.errors import ConfigError, InputError
from modularevo.merging.apply import make_plan


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    return make_zoo(tmp_path)


def test_passthrough_slices_stack_layer_ranges(tmp_path: Path, zoo):
    """mergekit's frankenmerge form: layers renumbered from 0, embeddings from the first
    slice, final norm and head from the last, the config's layer count updated."""
    p = zoo["paths"]
    out = run_recipe(tmp_path, f"""
slices:
  - sources:
      - model: {p["a"]}
        layer_range: [0, 8]
  - sources:
      - model: {p["b"]}
        layer_range: [4, 12]
merge_method: passthrough
dtype: float32
""")  # fmt: skip
    a, b = zoo["a"], zoo["b"]
    assert len([n for n in out if n.endswith("q_proj.weight")]) == 16
    for j in range(16):
        src, i = (a, j) if j < 8 else (b, j - 8 + 4)
        n = "model.layers.{}.mlp.down_proj.weight"
        assert torch.equal(out[n.format(j)], src[n.format(i)])
    assert torch.equal(out["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(out["lm_head.weight"], b["lm_head.weight"])
    assert torch.equal(out["model.norm.weight"], b["model.norm.weight"])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 16


def test_slerp_over_slices_equals_the_models_form(tmp_path: Path, zoo):
    """mergekit's README SLERP example (slices with both ends over all layers, a t
    gradient per filter) gives the same tensors as the `models:` form."""
    p = zoo["paths"]
    t = """parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
"""
    sliced = run_recipe(tmp_path, f"""
slices:
  - sources:
      - model: {p["base"]}
        layer_range: [0, {LAYERS}]
      - model: {p["a"]}
        layer_range: [0, {LAYERS}]
merge_method: slerp
base_model: {p["base"]}
{t}""", "sliced")  # fmt: skip
    whole = run_recipe(tmp_path, f"""
merge_method: slerp
base_model: {p["base"]}
models:
  - model: {p["base"]}
  - model: {p["a"]}
{t}""", "whole")  # fmt: skip
    assert sliced.keys() == whole.keys()
    for n in whole:
        assert torch.equal(sliced[n], whole[n]), n


def test_task_arithmetic_over_two_slices_takes_depth_per_slice(tmp_path: Path, zoo):
    """Each slice is merged on its own; a gradient runs over each slice's layers."""
    p = zoo["paths"]
    src = lambda m, r: {"model": p[m], "layer_range": r}  # noqa: E731
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"],
        "slices": [
            {"sources": [src("base", [0, 6]), src("a", [0, 6])]},
            {"sources": [src("base", [6, 12]), src("b", [6, 12])],
             "parameters": {"weight": [0, 1]}},
        ],
        "parameters": {"weight": 1.0},
    }  # fmt: skip
    out = run_recipe(tmp_path, recipe)
    base, a, b = zoo["base"], zoo["a"], zoo["b"]
    n = "model.layers.{}.self_attn.v_proj.weight"
    torch.testing.assert_close(out[n.format(2)], a[n.format(2)])
    for j in range(6, 12):
        w = (j - 6) / 5
        want = base[n.format(j)] + w * (b[n.format(j)] - base[n.format(j)])
        torch.testing.assert_close(out[n.format(j)], want, rtol=1e-5, atol=1e-6)
    bad = {**recipe, "slices": [{"sources": [src("base", [0, 6]), src("a", [0, 6])],
                                 "residual_weight": 0.5}]}  # fmt: skip
    with pytest.raises(ConfigError, match=r"residual_weight.*not supported yet"):
        make_plan(bad)
    bad = {**recipe, "slices": [{"sources": [src("base", [0, 6]), src("a", [8, 14])]}]}
    with pytest.raises(InputError, match="beyond its 12 layers"):
        make_plan(bad)
    bad = {**recipe, "slices": [{"sources": [src("a", [0, 6])]}]}
    with pytest.raises(ConfigError, match="list base_model among"):
        make_plan(bad)
