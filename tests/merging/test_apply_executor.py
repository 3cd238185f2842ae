"""The streaming executor on hand-made safetensors "models" (no transformers needed)."""

import json
from pathlib import Path

import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import load_file, save_file

from modularevo import merge
from modularevo.errors import ConfigError, InputError
from modularevo.merging.apply import make_plan
from modularevo.merging.spec import MERGE_METHODS, Capabilities, Param, register_method
from modularevo.merging.thresholds import kth_largest_bits


def _mean_fn(tensors, base, **_):
    return torch.stack(list(tensors)).mean(0)


@pytest.fixture
def mean_chunked():
    """A test-only elementwise method, registered for one test and removed afterwards."""
    register_method(
        "_test_mean_chunked",
        paper="-",
        summary="test only",
        params=(Param("weight", "per_model", default=1.0),),
        needs_base=False,
        capabilities=Capabilities(elementwise=True),
    )(_mean_fn)
    yield "_test_mean_chunked"
    MERGE_METHODS.remove("_test_mean_chunked")


def _model(path: Path, seed: int, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {
        "emb.weight": torch.randn(16, 4, generator=g),
        "lin.weight": torch.randn(4, 4, generator=g),
        "lin.bias": torch.randn(4, generator=g),
        "pos_ids": torch.arange(8),
        **extra,
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"vocab_size": sd["emb.weight"].shape[0]}))
    return sd


def _ta_recipe(tmp: Path, **over) -> dict:
    return {
        "merge_method": "task_arithmetic",
        "base_model": str(tmp / "base"),
        "models": [
            {"model": str(tmp / "a"), "parameters": {"weight": 0.5}},
            {"model": str(tmp / "b"), "parameters": {"weight": 0.25}},
        ],
        **over,
    }


@pytest.fixture
def three(tmp_path: Path):
    return [_model(tmp_path / n, i) for i, n in enumerate(("base", "a", "b"))]


def test_task_arithmetic_hand_checked_and_buffers_copied(tmp_path: Path, three):
    base, a, b = three
    merge(_ta_recipe(tmp_path), tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    n = "lin.weight"
    want = base[n] + 0.5 * (a[n] - base[n]) + 0.25 * (b[n] - base[n])
    torch.testing.assert_close(out[n], want, rtol=0, atol=1e-6)
    assert torch.equal(out["pos_ids"], base["pos_ids"])
    assert (tmp_path / "out" / "README.md").read_text().count("task_arithmetic") >= 2
    assert (tmp_path / "out" / "config.json").is_file()


def test_per_tensor_rules_and_out_dtype(tmp_path: Path, three):
    base, a, b = three
    rules = {"weight": {"lin\\.": 1.0, "default": 0.0}}
    cfg = _ta_recipe(tmp_path, parameters=rules, out_dtype="bfloat16")
    cfg["models"] = [{"model": m["model"]} for m in cfg["models"]]
    merge(cfg, tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    assert out["lin.bias"].dtype == torch.bfloat16
    assert torch.equal(out["emb.weight"], base["emb.weight"].bfloat16())  # weight 0 → base
    want = (
        base["lin.bias"] + (a["lin.bias"] - base["lin.bias"]) + (b["lin.bias"] - base["lin.bias"])
    )
    torch.testing.assert_close(out["lin.bias"], want.bfloat16())


def test_mergekit_recipe_with_base_listed_among_models(tmp_path: Path, three):
    _base, a, _ = three
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"merge_method: ties\nbase_model: {tmp_path / 'base'}\nmodels:\n"
        f"  - model: {tmp_path / 'base'}\n"
        f"  - model: {tmp_path / 'a'}\n    parameters: {{weight: 1.0, density: 1.0}}\n"
        "parameters: {normalize: true, int8_mask: true}\ndtype: float32\n"
    )
    merge(recipe, tmp_path / "out", progress=False)
    # one model at density 1 with normalize → that model back
    torch.testing.assert_close(read_output(tmp_path / "out")["lin.weight"], a["lin.weight"])


def test_chunked_elementwise_equals_whole(tmp_path: Path, monkeypatch, mean_chunked):
    big = {"big": torch.randn(300, 7)}
    for i, n in enumerate(("a", "b")):
        _model(tmp_path / n, i, **{k: v + i for k, v in big.items()})
    cfg = {"merge_method": mean_chunked, "models": [{"model": str(tmp_path / n)}
                                                            for n in ("a", "b")]}  # fmt: skip
    monkeypatch.setattr("modularevo.merging.stream.CHUNK", 64)
    merge(cfg, tmp_path / "out", progress=False)
    torch.testing.assert_close(read_output(tmp_path / "out")["big"], big["big"] + 0.5)


def test_global_thresholds_are_exact():
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(1000, generator=g).abs(), torch.randn(777, generator=g).abs()]
    data[1][:100] = 0.5  # ties
    k = [200, 150]
    thr = kth_largest_bits(lambda: iter([(0, data[0]), (1, data[1][:300]), (1, data[1][300:])]),
                           k, 2)  # fmt: skip
    for i in range(2):
        assert thr[i] == float(torch.sort(data[i], descending=True).values[k[i] - 1])


def test_ties_global_scope_runs_prepass(tmp_path: Path, three):
    _base, _a, _b = three
    cfg = _ta_recipe(tmp_path, merge_method="ties", parameters={"trim_scope": "global",
                                                                "density": 0.3})  # fmt: skip
    plan = make_plan(cfg)
    assert plan.needs_thresholds()
    plan.close()
    merge(cfg, tmp_path / "out", progress=False)
    assert torch.isfinite(read_output(tmp_path / "out")["lin.weight"]).all()


def test_same_seed_same_bytes_for_random_method(tmp_path: Path, three):
    cfg = _ta_recipe(tmp_path, merge_method="dare_linear", parameters={"density": 0.5})
    for name, seed in (("o1", 3), ("o2", 3), ("o3", 4)):
        merge(cfg, tmp_path / name, seed=seed, progress=False)
    shard = "model-00001-of-00001.safetensors"
    one, two, three_ = ((tmp_path / o / shard).read_bytes() for o in ("o1", "o2", "o3"))
    assert one == two
    assert one != three_


# ---- bad input: one clear error each, nothing written -------------------------------------


def test_nan_in_last_tensor_leaves_no_output(tmp_path: Path, three):
    sd = load_file(str(tmp_path / "b" / "model.safetensors"))
    sd["pos_ids"] = torch.arange(8)
    sd["lin.bias"][2] = float("nan")
    save_file(sd, str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(InputError, match=r"'lin.bias' of .*b holds 1 NaN"):
        merge(_ta_recipe(tmp_path), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_differing_names(tmp_path: Path, three):
    _model(tmp_path / "b", 5, extra_head=torch.zeros(2))
    with pytest.raises(InputError, match=r"(?s)has 1 tensor.*'extra_head'.*missing_tensors: base"):
        make_plan(_ta_recipe(tmp_path))
    plan = make_plan(_ta_recipe(tmp_path, missing_tensors="base"))
    assert "extra_head" not in [t.name for t in plan.tasks]
    plan.close()


def test_differing_vocab_and_shapes(tmp_path: Path, three):
    g = torch.Generator().manual_seed(9)
    _model(tmp_path / "b", 5, **{"emb.weight": torch.randn(20, 4, generator=g)})
    with pytest.raises(
        InputError, match=r"(?s)vocabulary sizes.*'emb.weight'.*\[20, 4\].*\[16, 4\]"
    ):
        make_plan(_ta_recipe(tmp_path))
    _model(tmp_path / "b", 5, **{"lin.weight": torch.zeros(4, 5)})
    with pytest.raises(InputError, match=r"(?s)shapes or kinds differ.*'lin.weight'"):
        make_plan(_ta_recipe(tmp_path))


def test_corrupted_input_and_missing_model(tmp_path: Path, three):
    (tmp_path / "a" / "model.safetensors").write_bytes(b"\x00" * 4)
    cfg = _ta_recipe(tmp_path)
    cfg["models"].append({"model": str(tmp_path / "nope")})
    with pytest.raises(InputError) as exc:
        make_plan(cfg)
    assert "corrupted" in str(exc.value)
    assert "nope" in str(exc.value)


def test_config_errors_listed_at_once(tmp_path: Path, three):
    cfg = _ta_recipe(tmp_path)
    cfg["models"][0]["parameters"] = {"wieght": 1.0, "lambda": 2.0}
    cfg["models"][1]["parameters"] = {"weight": float("nan")}
    with pytest.raises(ConfigError) as exc:
        make_plan(cfg)
    text = str(exc.value)
    assert len(exc.value.problems) == 3
    assert "Did you mean 'weight'" in text
    assert "global parameter" in text
    assert "finite" in text


def test_unknown_method_and_density_out_of_range(tmp_path: Path, three):
    with pytest.raises(ConfigError, match="Did you mean 'ties'"):
        make_plan(_ta_recipe(tmp_path, merge_method="tiess"))
    with pytest.raises(ConfigError, match=r"density: must be <= 1.0 \(got 1.5\)"):
        make_plan(_ta_recipe(tmp_path, merge_method="ties", parameters={"density": 1.5}))


def test_mask_shape_mismatch(tmp_path: Path, three):
    from modularevo.modules.io import save_module
    from modularevo.modules.mask import ModuleMask

    if "modularevo" not in MERGE_METHODS:
        pytest.skip("the modularevo method is not registered in this checkout")
    save_module(ModuleMask(masks={"lin.weight": torch.ones(3, 4, dtype=torch.bool)}),
                tmp_path / "m.safetensors")  # fmt: skip
    cfg = _ta_recipe(tmp_path, merge_method="modularevo")
    for m in cfg["models"]:
        m["mask"] = str(tmp_path / "m.safetensors")
    with pytest.raises(
        InputError, match=r"(?s)mask .lin.weight. is \[3, 4\] but the tensor is \[4, 4\]"
    ):
        make_plan(cfg)


def test_output_must_not_be_an_input(tmp_path: Path, three):
    with pytest.raises(ConfigError, match="would overwrite the input"):
        merge(_ta_recipe(tmp_path), tmp_path / "a", overwrite=True, progress=False)


def test_method_cross_parameter_check(tmp_path: Path, three):
    cfg = _ta_recipe(tmp_path, merge_method="della", parameters={"density": 0.9})
    with pytest.raises(ConfigError, match="density \\+ epsilon < 1"):
        make_plan(cfg)
