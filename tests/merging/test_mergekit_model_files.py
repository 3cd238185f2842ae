"""The model folders' files around the weights, as mergekit reads and writes them.

Inputs saved as ``pytorch_model.bin`` load as weights only; the output gets its
config and tokenizer from ``tokenizer_source`` and the recipe's ``chat_template``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mergekit_zoo import LAYERS, make_zoo, run_recipe

from modularevo.errors import InputError
from modularevo.merging.apply import make_plan


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    return make_zoo(tmp_path)


def test_tokenizer_source_base_is_the_base_model_not_a_folder(tmp_path: Path, zoo):
    """``tokenizer_source: base`` (mergekit's keyword) used to be read as a folder named
    "base": the output had no config.json nor tokenizer, and the merge exited 0."""
    p = zoo["paths"]
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"], "tokenizer_source": "base",
        "models": [{"model": p["a"], "parameters": {"weight": 0.5}}],
    }  # fmt: skip
    run_recipe(tmp_path, recipe)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == LAYERS
    assert json.loads((out / "tokenizer.json").read_text())["tag"] == "base"
    recipe["tokenizer_source"] = p["b"]  # a model folder: its files
    run_recipe(tmp_path, recipe, "out_b")
    assert json.loads((tmp_path / "out_b" / "tokenizer.json").read_text())["tag"] == "b"
    recipe["tokenizer_source"] = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a model folder"):
        make_plan(recipe)


def test_chat_template_text_name_and_auto(tmp_path: Path, zoo):
    """mergekit's chat_template: Jinja text as written, a built-in name, or ``auto``
    (the template most inputs share), written into the output's tokenizer_config.json."""
    p = zoo["paths"]
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for name in ("a", "b"):
        (tmp_path / name / "tokenizer_config.json").write_text(json.dumps({"chat_template": jinja}))
    recipe: dict[str, Any] = {
        "merge_method": "linear", "models": [{"model": p["a"]}, {"model": p["b"]}],
    }  # fmt: skip
    for i, (value, want) in enumerate(
        ((jinja, jinja), ("auto", jinja), ("chatml", "<|im_start|>"))
    ):
        run_recipe(tmp_path, {**recipe, "chat_template": value}, f"out{i}")
        written = json.loads((tmp_path / f"out{i}" / "tokenizer_config.json").read_text())
        assert want in written["chat_template"]


# --- .bin inputs -------------------------------------------------------------------------


class _Payload:
    """A pickled object whose loading would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_bin_inputs_load_as_weights_only(tmp_path: Path, zoo):
    """A model saved as pytorch_model.bin (as mergekit accepts) merges like its
    safetensors twin; a pickle that needs code is refused, naming the file."""
    p = zoo["paths"]
    old = tmp_path / "a_bin"
    old.mkdir()
    (old / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    torch.save(zoo["a"], old / "pytorch_model.bin")
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"],
        "models": [{"model": str(old), "parameters": {"weight": 0.5}}],
    }  # fmt: skip
    from_bin = run_recipe(tmp_path, recipe, "from_bin")
    recipe["models"][0]["model"] = p["a"]
    from_st = run_recipe(tmp_path, recipe, "from_st")
    for n in from_st:
        assert torch.equal(from_bin[n], from_st[n])
    torch.save({"x": _Payload()}, old / "pytorch_model.bin")
    recipe["models"][0]["model"] = str(old)
    with pytest.raises(InputError, match=r"pytorch_model.bin.*weights only"):
        make_plan(recipe)
