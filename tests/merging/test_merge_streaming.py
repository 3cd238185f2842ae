"""Streaming executor internals: exact chunked top-k cuts, chunked paths, sharded inputs,
missing tensors, tied weights, list-valued parameters and positioned reads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import load_file, save_file

from modularevo import merge
from modularevo.errors import ConfigError, InputError
from modularevo.io import ShardedWriter, TensorSpec, open_model
from modularevo.merging import stream, thresholds
from modularevo.merging.apply import make_plan
from modularevo.merging.sparsify import Cut, cut_mask, keep_count, topk_mask
from modularevo.merging.spec import MERGE_METHODS


def _kept(model: torch.Tensor, base: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    cut = thresholds.topk_cut(model, base, k, chunk)
    absd = (model.float() - base.float()).abs()
    parts = [cut_mask(absd[a : a + chunk], cut.shifted(a)) for a in range(0, absd.numel(), chunk)]
    return torch.cat(parts)


@pytest.mark.parametrize("kind", ["normal", "quantized", "zeros"])
@pytest.mark.parametrize("density", [0.001, 0.2, 0.9])
def test_topk_cut_in_chunks_equals_whole_tensor_topk(kind: str, density: float):
    g = torch.Generator().manual_seed(1)
    n = 300_001  # above the exact small-tensor path, not a multiple of the chunk
    base = torch.randn(n, generator=g)
    delta = torch.randn(n, generator=g)
    if kind == "quantized":
        delta = torch.round(delta * 4) / 4  # many ties at every value
    if kind == "zeros":
        delta[: n // 2] = 0.0  # half the task vector unchanged: ties at 0
    model = base + delta
    k = keep_count(density, n)
    want = topk_mask((model - base).abs(), k)
    got = _kept(model, base, k, chunk=7_777)
    assert int(got.sum()) == k
    assert torch.equal(got, want)


def test_topk_cut_edges_and_fallback(monkeypatch: pytest.MonkeyPatch):
    base = torch.zeros(100)
    model = torch.arange(100.0)
    assert thresholds.topk_cut(model, base, 100) == Cut(float("-inf"))
    assert int(_kept(model, base, 0, 10).sum()) == 0
    n = 200_000
    model = torch.randn(n, generator=torch.Generator().manual_seed(2))
    base = torch.zeros(n)
    monkeypatch.setattr(thresholds, "_bracket", lambda sample, q: (5.0, 6.0))  # misses
    assert torch.equal(_kept(model, base, 1234, 10_000), topk_mask(model.abs(), 1234))


def _model(path: Path, seed: int, extra: dict[str, torch.Tensor] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {
        "emb.weight": torch.round(torch.randn(500, 10, generator=g) * 8) / 8,
        "lin.weight": torch.randn(8, 4, generator=g),
        "lin.bias": torch.randn(8, generator=g),
        **(extra or {}),
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"))
    return sd


def _recipe(tmp: Path, method: str, **params) -> dict:
    return {
        "merge_method": method,
        "base_model": str(tmp / "base"),
        "models": [
            {"model": str(tmp / m), "parameters": {"weight": w}}
            for m, w in (("a", 0.7), ("b", 0.4), ("c", 1.0))
        ],
        "parameters": params,
    }


@pytest.fixture
def four(tmp_path: Path) -> list[dict]:
    return [_model(tmp_path / n, i) for i, n in enumerate(("base", "a", "b", "c"))]


def test_chunked_per_tensor_ties_equals_whole_tensor_ties(
    tmp_path: Path, four, monkeypatch: pytest.MonkeyPatch
):
    base, *models = four
    calls = []
    real = stream._merge_chunked
    monkeypatch.setattr(stream, "_merge_chunked", lambda *a: calls.append(a[4]) or real(*a))
    monkeypatch.setattr(stream, "CHUNK", 333)
    cfg = _recipe(tmp_path, "ties", density=0.3)
    merge(cfg, tmp_path / "out", progress=False)
    assert calls == ["cuts"]  # only emb.weight (5000 elements) is above the chunk size
    ties = MERGE_METHODS.get("ties").fn
    n = "emb.weight"
    want = ties([m[n] for m in models], base[n], weight=[0.7, 0.4, 1.0], density=0.3)
    assert torch.equal(read_output(tmp_path / "out")[n], want)


@pytest.mark.parametrize(
    ("method", "params", "mode"),
    [
        ("task_arithmetic", {}, "elementwise"),
        ("linear", {}, "elementwise"),
        ("ties", {"density": 0.5}, "cuts"),
        ("ties", {"density": 0.5, "trim_scope": "global"}, "elementwise"),
        ("ties", {"density": 0.5, "rescale": True}, None),
        ("dare_linear", {"density": 0.5}, None),
    ],
)
def test_chunk_modes_declared(tmp_path: Path, four, method: str, params: dict, mode):
    plan = make_plan(_recipe(tmp_path, method, **params))
    try:
        assert plan.chunk_mode(plan.params_for("emb.weight")) == mode
    finally:
        plan.close()


def test_sharded_input_with_index_through_the_merge(tmp_path: Path, four):
    base, a, b, c = four
    sharded = tmp_path / "base-sharded"
    sharded.mkdir()
    specs = [TensorSpec(n, t.dtype, tuple(t.shape)) for n, t in base.items()]
    with ShardedWriter(sharded, specs, shard_bytes=200) as w:
        for n, t in base.items():
            w.write(n, t)
    assert len(list(sharded.glob("model-*.safetensors"))) == 2
    cfg = _recipe(tmp_path, "task_arithmetic")
    cfg["base_model"] = str(sharded)
    merge(cfg, tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    for n in base:
        want = base[n] + 0.7 * (a[n] - base[n]) + 0.4 * (b[n] - base[n]) + (c[n] - base[n])
        torch.testing.assert_close(out[n], want, rtol=0, atol=1e-5)


def test_missing_tensors_base_keeps_the_base_value(tmp_path: Path, four):
    base, a, _b, c = four
    sd = load_file(str(tmp_path / "b" / "model.safetensors"))
    del sd["lin.bias"]
    sd["extra"] = torch.ones(3)
    save_file(sd, str(tmp_path / "b" / "model.safetensors"))
    cfg = _recipe(tmp_path, "task_arithmetic", missing_tensors="base")
    cfg["missing_tensors"] = cfg["parameters"].pop("missing_tensors")
    merge(cfg, tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    n = "lin.bias"  # b lacks it: contributes τ = 0
    want = base[n] + 0.7 * (a[n] - base[n]) + (c[n] - base[n])
    torch.testing.assert_close(out[n], want, rtol=0, atol=1e-6)
    assert "extra" not in out  # the base lacks it


def test_tied_weights_stay_tied_under_a_random_method(tmp_path: Path):
    for i, n in enumerate(("base", "a", "b")):
        g = torch.Generator().manual_seed(i)
        emb = torch.randn(40, 6, generator=g)
        _model(tmp_path / n, i, {"wte.weight": emb, "lm_head.weight": emb.clone()})
    cfg = {"merge_method": "dare_linear", "base_model": str(tmp_path / "base"),
           "models": [{"model": str(tmp_path / m)} for m in ("a", "b")],
           "parameters": {"density": 0.5}}  # fmt: skip
    plan = make_plan(cfg)
    alias = [t for t in plan.tasks if t.action == "alias"]
    plan.close()
    assert [(t.name, t.alias_of) for t in alias] == [("lm_head.weight", "wte.weight")]
    merge(cfg, tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    assert torch.equal(out["lm_head.weight"], out["wte.weight"])
    assert not torch.equal(
        out["wte.weight"], load_file(str(tmp_path / "base" / "model.safetensors"))["wte.weight"]
    )


def test_cabs_order_list_is_a_value_not_a_gradient(tmp_path: Path, four):
    cfg = _recipe(tmp_path, "cabs", n=1, m=2)
    cfg["models"] = cfg["models"][:2]
    outs = []
    for order in ([1, 0], [0, 1]):
        cfg["parameters"]["order"] = order
        merge(cfg, tmp_path / f"o{order[0]}", progress=False)
        outs.append(read_output(tmp_path / f"o{order[0]}")["emb.weight"])
    assert not torch.equal(outs[0], outs[1])
    cfg["parameters"]["order"] = [0, 0]
    with pytest.raises(ConfigError, match="must not repeat"):
        make_plan(cfg)
    cfg["parameters"]["order"] = [1, 0]
    cfg["models"][0]["parameters"]["weight"] = [0.1, 0.2]  # a gradient, not a value
    assert make_plan(cfg).params_for("emb.weight")["weight"][0] == 0.1  # no layer: t = 0
    cfg["models"][0]["parameters"]["weight"] = [0.1, "x"]
    with pytest.raises(ConfigError, match="must be a number"):
        make_plan(cfg)


def test_reads_are_positioned_not_mapped(tmp_path: Path):
    t = torch.randn(1000, 3)
    save_file({"w": t}, str(tmp_path / "m.safetensors"))
    reader = open_model(tmp_path / "m.safetensors")
    got = reader.read("w")
    assert torch.equal(got, t)
    assert torch.equal(reader.read_flat("w", 10, 25), t.reshape(-1)[10:25])
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "m.safetensors") not in maps.read_text()
    got.add_(1)  # a fresh buffer: writing to it leaves the file alone
    reader.close()
    assert torch.equal(load_file(str(tmp_path / "m.safetensors"))["w"], t)


def test_cli_merge_does_not_import_transformers(tmp_path: Path, four):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(_recipe(tmp_path, "ties", density=0.5)))
    code = (
        "import sys; from modularevo.cli.main import main\n"
        f"sys.argv = ['modularevo', 'merge', {str(recipe)!r}, {str(tmp_path / 'out')!r}, "
        "'--no-progress']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = [m for m in ('transformers', 'datasets', 'accelerate') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "README.md").is_file()


def test_modularevo_masks_are_sliced_with_the_chunks(
    tmp_path: Path, four, monkeypatch: pytest.MonkeyPatch
):
    from modularevo.modules.io import save_module
    from modularevo.modules.mask import ModuleMask

    base, a, b, _c = four
    g = torch.Generator().manual_seed(5)
    masks = [torch.rand(500, 10, generator=g) < 0.3 for _ in range(2)]
    for i, m in enumerate(masks):
        save_module(ModuleMask(masks={"emb.weight": m}), tmp_path / f"m{i}.safetensors")
    cfg = _recipe(tmp_path, "modularevo")
    cfg["models"] = cfg["models"][:2]
    for i, entry in enumerate(cfg["models"]):
        entry["mask"] = str(tmp_path / f"m{i}.safetensors")
    monkeypatch.setattr(stream, "CHUNK", 777)
    merge(cfg, tmp_path / "out", progress=False)
    n = "emb.weight"
    want = base[n] + 0.7 * masks[0] * (a[n] - base[n]) + 0.4 * masks[1] * (b[n] - base[n])
    torch.testing.assert_close(read_output(tmp_path / "out")[n], want, rtol=0, atol=1e-6)


def test_a_model_sharing_no_tensor_with_the_base_is_refused(tmp_path: Path, four):
    # with missing_tensors: base it would silently contribute nothing (the base back)
    sd = load_file(str(tmp_path / "b" / "model.safetensors"))
    save_file({f"other.{n}": t for n, t in sd.items()}, str(tmp_path / "b" / "model.safetensors"))
    cfg = _recipe(tmp_path, "task_arithmetic")
    cfg["missing_tensors"] = "base"
    with pytest.raises(InputError, match=r"(?s)share no tensor with the base.*b: none of its"):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
