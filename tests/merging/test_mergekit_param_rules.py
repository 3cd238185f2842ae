"""Per-tensor parameter rules and layer gradients in mergekit's forms, on tiny llamas.

Mapping keys are substrings unless they hold regex characters, filter lists take the
first match, and gradients are interpolated over the layers as mergekit 0.1.5 does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from mergekit_zoo import LAYERS, Q1, Q10, UP, make_zoo, run_recipe

from modularevo.errors import ConfigError
from modularevo.merging.apply import make_plan


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    return make_zoo(tmp_path)


def test_mapping_rule_keys_are_substrings_not_regexes(tmp_path: Path, zoo):
    """``{"layers.1.": 0}`` used to be a regex that also hit layers 10 and 11."""
    p = zoo["paths"]
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"],
        "models": [{"model": p["a"], "parameters": {"weight": {"layers.1.": 0.0, "default": 1.0}}}],
    }  # fmt: skip
    out = run_recipe(tmp_path, recipe)
    assert torch.equal(out[Q1], zoo["base"][Q1])
    torch.testing.assert_close(out[Q10], zoo["a"][Q10])
    plan = make_plan({**recipe, "models": [{"model": p["a"], "parameters": {
        "weight": {"layers\\.1[01]\\.": 0.0, "default": 1.0}}}]})  # fmt: skip
    assert plan.params_for(Q10)["weight"] == [0.0]  # regex characters: a regex
    assert plan.params_for(Q1)["weight"] == [1.0]


def test_filter_lists_take_the_first_match_and_star_matches_all(zoo):
    """mergekit 0.1.5's evaluate_setting: entries are tried in order; one without a
    filter, or with ``filter: "*"``, matches every tensor where it stands."""
    p = zoo["paths"]

    def weights(rule: Any) -> tuple[float, float]:
        plan = make_plan({
            "merge_method": "task_arithmetic", "base_model": p["base"],
            "models": [{"model": p["a"], "parameters": {"weight": rule}}],
        })  # fmt: skip
        return plan.params_for(UP.format(0))["weight"][0], plan.params_for(Q1)["weight"][0]

    assert weights([{"filter": "mlp", "value": 0.9}, {"value": 0.2}]) == (0.9, 0.2)
    assert weights([{"value": 0.2}, {"filter": "mlp", "value": 0.9}]) == (0.2, 0.2)
    assert weights([{"filter": "*", "value": 0.3}, {"filter": "mlp", "value": 0.9}]) == (0.3, 0.3)
    assert weights([{"filter": "self_attn", "value": 0.1}, {"filter": "*", "value": 0.4}]) == (
        0.4, 0.1,
    )  # fmt: skip


def test_gradient_interpolates_over_the_layers_as_mergekit(tmp_path: Path, zoo):
    """mergekit 0.1.5 plans layer i of L at t = i/(L-1) and interpolates the anchors
    linearly; tensors outside the layers (embeddings, norm, head) take t = 0."""
    p = zoo["paths"]
    recipe = f"""
merge_method: task_arithmetic
base_model: {p["base"]}
models:
  - model: {p["a"]}
    parameters:
      weight: [0, 0.5, 1]
  - model: {p["b"]}
    parameters:
      weight:
        - filter: mlp
          value: [1, 0]
        - value: 0
"""
    out = run_recipe(tmp_path, recipe)
    base, a, b = zoo["base"], zoo["a"], zoo["b"]
    for i in range(LAYERS):
        t = i / (LAYERS - 1)
        wa = 0.5 * (2 * t) if t <= 0.5 else 0.5 + 0.5 * (2 * t - 1)  # anchors 0, .5, 1
        for n, wb in ((UP.format(i), 1 - t), (f"model.layers.{i}.self_attn.q_proj.weight", 0.0)):
            want = base[n] + wa * (a[n] - base[n]) + wb * (b[n] - base[n])
            torch.testing.assert_close(out[n], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(out["lm_head.weight"], base["lm_head.weight"])  # t = 0: weights 0


def test_slerp_t_gradient_and_density_gradient_validate(zoo):
    p = zoo["paths"]
    plan = make_plan({
        "merge_method": "slerp", "base_model": p["base"], "models": [{"model": p["a"]}],
        "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                             {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                             {"value": 0.5}]},
    })  # fmt: skip
    t1 = 1 / 11 * 4  # scaled position of layer 1 among 5 anchors
    want = (1 - (t1 - int(t1))) * 0 + (t1 - int(t1)) * 0.5
    assert plan.params_for(Q1)["t"] == pytest.approx(want)
    assert plan.params_for("model.norm.weight")["t"] == 0.5
    with pytest.raises(ConfigError, match="density"):
        make_plan({
            "merge_method": "ties", "base_model": p["base"],
            "models": [{"model": p["a"], "parameters": {"density": [0.5, 1.5]}}],
        })  # fmt: skip
    with pytest.raises(ConfigError, match="one number when trimming globally"):
        make_plan({
            "merge_method": "ties", "base_model": p["base"], "parameters": {"trim_scope": "global"},
            "models": [{"model": p["a"], "parameters": {"density": [0.2, 0.8]}}],
        })  # fmt: skip
