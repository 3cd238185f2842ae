"""Loading and checking mergekit recipes: quoted values, unsupported keys, method checks.

mergekit 0.1.5 validates parameters in pydantic's lax mode; keys modularevo does not
implement yet are named as such, and the recipe is saved as written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mergekit_zoo import Q1, make_zoo, run_recipe

from modularevo.errors import ConfigError
from modularevo.merging.apply import make_plan
from modularevo.merging.methods.slerp import slerp_tensors


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    return make_zoo(tmp_path)


def test_linear_weights_summing_to_zero_fail_at_validate(zoo):
    p = zoo["paths"]
    recipe = {
        "merge_method": "linear",
        "models": [{"model": p["a"], "parameters": {"weight": 1.0}},
                   {"model": p["b"], "parameters": {"weight": -1.0}}],
    }  # fmt: skip
    with pytest.raises(ConfigError, match="sum to 0"):
        make_plan(recipe)
    recipe["models"][1]["parameters"]["weight"] = {"mlp": -1.0, "default": 1.0}  # per tensor
    with pytest.raises(ConfigError, match=r"layers\.0\.mlp\..*sum to 0"):
        make_plan(recipe)
    recipe["parameters"] = {"normalize": False}
    make_plan(recipe)


def test_quoted_numbers_and_slerp_t_above_one_are_accepted(tmp_path: Path, zoo):
    """mergekit validates parameters in pydantic's lax mode ("0.5" is 0.5) and does not
    bound slerp's t."""
    p = zoo["paths"]
    out = run_recipe(tmp_path, f"""
merge_method: slerp
base_model: {p["base"]}
models:
  - model: {p["a"]}
parameters:
  t: "1.5"
""")  # fmt: skip
    torch.testing.assert_close(out[Q1], slerp_tensors(1.5, zoo["base"][Q1], zoo["a"][Q1]))
    plan = make_plan({
        "merge_method": "ties", "base_model": p["base"],
        "models": [{"model": p["a"], "parameters": {"weight": "0.5", "density": "1"}}],
        "parameters": {"normalize": "false"},
    })  # fmt: skip
    assert plan.params_for(Q1) | {"weight": [0.5], "density": [1], "normalize": False} == (
        plan.params_for(Q1)
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("chat_template", "llama3"),
        ("modules", {"text": {"models": [{"model": "a"}]}}),
    ],
)
def test_unsupported_mergekit_keys_are_named_not_called_misspelt(zoo, key, value):
    p = zoo["paths"]
    recipe: dict[str, Any] = {
        "merge_method": "task_arithmetic",
        "base_model": p["base"],
        key: value,
    }
    if key != "modules":
        recipe["models"] = [{"model": p["a"]}]
    with pytest.raises(ConfigError) as err:
        make_plan(recipe)
    text = str(err.value)
    assert f"{key}:" in text
    assert "not supported yet" in text
    assert "spelling" not in text


def test_quoted_recipe_file_round_trip_keeps_what_was_written(tmp_path: Path, zoo):
    """merge_config.yaml holds the recipe as written (quoted numbers included)."""
    p = zoo["paths"]
    recipe = {"merge_method": "linear", "models": [
        {"model": p["a"], "parameters": {"weight": "0.25"}},
        {"model": p["b"], "parameters": {"weight": 0.75}}]}  # fmt: skip
    out = run_recipe(tmp_path, recipe)
    want = 0.25 * zoo["a"][Q1] + 0.75 * zoo["b"][Q1]
    torch.testing.assert_close(out[Q1], want)
    written = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert written["models"][0]["parameters"]["weight"] == "0.25"
    assert math.isclose(float(written["models"][0]["parameters"]["weight"]), 0.25)
