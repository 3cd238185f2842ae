"""Recipes in mergekit's documented forms run on tiny llama-shaped models.

Each test names the mergekit form it covers; expected tensors are computed by hand
from mergekit 0.1.5's definitions (the reference where it is cited). The models are
12-layer llama-shaped folders with a config and tokenizer files, small enough that
every merge takes milliseconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from merge_helpers import read_output
from safetensors.torch import save_file

from modularevo import merge
from modularevo.errors import ConfigError, InputError
from modularevo.merging.apply import make_plan
from modularevo.merging.methods.slerp import slerp_tensors

LAYERS = 12
VOCAB = 16
HIDDEN = 4


def _tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(LAYERS):
        pre = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            sd[pre + f"self_attn.{proj}_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g)
        for proj in ("gate", "up"):
            sd[pre + f"mlp.{proj}_proj.weight"] = torch.randn(2 * HIDDEN, HIDDEN, generator=g)
        sd[pre + "mlp.down_proj.weight"] = torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sd[pre + f"{norm}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["lm_head.weight"] = torch.randn(VOCAB, HIDDEN, generator=g)
    return sd


def _write(folder: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 1, "num_key_value_heads": 1, "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "tag": folder.name}))
    return sd


@pytest.fixture
def zoo(tmp_path: Path) -> dict[str, Any]:
    """base, a, b: three models; ``paths`` maps each name to its folder."""
    models = {n: _write(tmp_path / n, _tensors(i)) for i, n in enumerate(("base", "a", "b"))}
    return {"paths": {n: str(tmp_path / n) for n in models}, **models}


def _run(tmp_path: Path, recipe: dict[str, Any] | str, name: str = "out") -> dict:
    """Merge ``recipe`` (a dict, or YAML text as a user writes it) and read the output."""
    if isinstance(recipe, str):
        path = tmp_path / f"{name}.yaml"
        path.write_text(recipe)
        recipe = str(path)  # type: ignore[assignment]
    merge(recipe, tmp_path / name, progress=False)
    return read_output(tmp_path / name)


Q1, Q10 = "model.layers.1.self_attn.q_proj.weight", "model.layers.10.self_attn.q_proj.weight"
UP = "model.layers.{}.mlp.up_proj.weight"


# --- defects found against mergekit 0.1.5 -------------------------------------------


def test_tokenizer_source_base_is_the_base_model_not_a_folder(tmp_path: Path, zoo):
    """``tokenizer_source: base`` (mergekit's keyword) used to be read as a folder named
    "base": the output had no config.json nor tokenizer, and the merge exited 0."""
    p = zoo["paths"]
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"], "tokenizer_source": "base",
        "models": [{"model": p["a"], "parameters": {"weight": 0.5}}],
    }  # fmt: skip
    _run(tmp_path, recipe)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == LAYERS
    assert json.loads((out / "tokenizer.json").read_text())["tag"] == "base"
    recipe["tokenizer_source"] = p["b"]  # a model folder: its files
    _run(tmp_path, recipe, "out_b")
    assert json.loads((tmp_path / "out_b" / "tokenizer.json").read_text())["tag"] == "b"
    recipe["tokenizer_source"] = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a model folder"):
        make_plan(recipe)


def test_slerp_in_mergekits_standard_form_with_the_base_under_models(tmp_path: Path, zoo):
    """mergekit's SLERP example lists the base under ``models:`` too; it used to pass
    validate and fail on the first tensor with three endpoints."""
    p = zoo["paths"]
    out = _run(tmp_path, f"""
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
    out = _run(tmp_path, recipe)
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
    out = _run(tmp_path, recipe)
    for n in (UP.format(3), "lm_head.weight"):
        delta = zoo["a"][n] - zoo["base"][n]
        merged = out[n] - zoo["base"][n]
        assert 0 < int((merged != 0).sum()) < delta.numel()
        torch.testing.assert_close(merged.abs().sum(), delta.abs().sum(), rtol=1e-5, atol=0)
    if method == "dare_linear":
        recipe["parameters"] = {"rescale": "inverse_p"}
        out = _run(tmp_path, recipe, "inv")
        n = UP.format(3)
        merged = out[n] - zoo["base"][n]
        kept = merged != 0
        delta = zoo["a"][n] - zoo["base"][n]
        torch.testing.assert_close(merged[kept], delta[kept] / 0.5, rtol=1e-5, atol=1e-6)


def test_mapping_rule_keys_are_substrings_not_regexes(tmp_path: Path, zoo):
    """``{"layers.1.": 0}`` used to be a regex that also hit layers 10 and 11."""
    p = zoo["paths"]
    recipe = {
        "merge_method": "task_arithmetic", "base_model": p["base"],
        "models": [{"model": p["a"], "parameters": {"weight": {"layers.1.": 0.0, "default": 1.0}}}],
    }  # fmt: skip
    out = _run(tmp_path, recipe)
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
    out = _run(tmp_path, f"""
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
        _run(tmp_path, {**recipe, "chat_template": value}, f"out{i}")
        written = json.loads((tmp_path / f"out{i}" / "tokenizer_config.json").read_text())
        assert want in written["chat_template"]


# --- layer gradients -----------------------------------------------------------------


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
    out = _run(tmp_path, recipe)
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


def test_quoted_recipe_file_round_trip_keeps_what_was_written(tmp_path: Path, zoo):
    """merge_config.yaml holds the recipe as written (quoted numbers included)."""
    p = zoo["paths"]
    recipe = {"merge_method": "linear", "models": [
        {"model": p["a"], "parameters": {"weight": "0.25"}},
        {"model": p["b"], "parameters": {"weight": 0.75}}]}  # fmt: skip
    out = _run(tmp_path, recipe)
    want = 0.25 * zoo["a"][Q1] + 0.75 * zoo["b"][Q1]
    torch.testing.assert_close(out[Q1], want)
    written = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert written["models"][0]["parameters"]["weight"] == "0.25"
    assert math.isclose(float(written["models"][0]["parameters"]["weight"]), 0.25)


# --- slices ----------------------------------------------------------------------------


def test_passthrough_slices_stack_layer_ranges(tmp_path: Path, zoo):
    """mergekit's frankenmerge form: layers renumbered from 0, embeddings from the first
    slice, final norm and head from the last, the config's layer count updated."""
    p = zoo["paths"]
    out = _run(tmp_path, f"""
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
    sliced = _run(tmp_path, f"""
slices:
  - sources:
      - model: {p["base"]}
        layer_range: [0, {LAYERS}]
      - model: {p["a"]}
        layer_range: [0, {LAYERS}]
merge_method: slerp
base_model: {p["base"]}
{t}""", "sliced")  # fmt: skip
    whole = _run(tmp_path, f"""
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
    out = _run(tmp_path, recipe)
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
    from_bin = _run(tmp_path, recipe, "from_bin")
    recipe["models"][0]["model"] = p["a"]
    from_st = _run(tmp_path, recipe, "from_st")
    for n in from_st:
        assert torch.equal(from_bin[n], from_st[n])
    torch.save({"x": _Payload()}, old / "pytorch_model.bin")
    recipe["models"][0]["model"] = str(old)
    with pytest.raises(InputError, match=r"pytorch_model.bin.*weights only"):
        make_plan(recipe)
