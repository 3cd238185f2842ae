"""The numpy backend: same bytes as torch, no torch import, clear refusals, NaN checks."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from merge_helpers import read_output
from safetensors.torch import load_file, save_file

from modularevo import merge
from modularevo.errors import ConfigError, InputError
from modularevo.io.dtypes import bf16_to_float32, float32_to_bf16
from modularevo.merging import stream
from modularevo.merging.apply import make_plan

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _models(tmp: Path, dtype: torch.dtype, *, tied: bool = False) -> list[Path]:
    """A base and three variants; emb.weight (1000 x 7) is chunked when CHUNK is small."""
    paths = []
    for i, name in enumerate(("base", "a", "b", "c")):
        g = torch.Generator().manual_seed(i)
        emb = torch.randn(1000, 7, generator=g) * 3
        sd = {
            "emb.weight": emb.to(dtype),
            "lin.weight": torch.randn(6, 5, generator=g).to(dtype),
            "lin.bias": torch.randn(6, generator=g).to(dtype),
            "pos_ids": torch.arange(12, dtype=torch.int64).reshape(1, 12),
        }
        if tied:
            sd["lm_head.weight"] = sd["emb.weight"].clone()
        (tmp / name).mkdir(parents=True)
        save_file(sd, str(tmp / name / "model.safetensors"))
        paths.append(tmp / name)
    return paths


def _recipe(paths: list[Path], method: str, backend: str, **extra) -> dict:
    base, *models = paths
    return {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": str(m), "parameters": {"weight": w}}
            for m, w in zip(models, (0.7, -0.4, 1.3), strict=True)
        ],
        "backend": backend,
        **extra,
    }


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("in_dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("out_dtype", [None, "float16", "bfloat16"])
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("task_arithmetic", {"lambda": 0.6}),
        ("task_arithmetic", {"normalize": True}),
        ("linear", {}),
        ("linear", {"normalize": False}),
    ],
)
def test_numpy_and_torch_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_dtype, out_dtype, method, params
):
    monkeypatch.setattr(stream, "CHUNK", 999)  # emb.weight runs on chunks, the rest whole
    paths = _models(tmp_path, DTYPES[in_dtype], tied=True)
    outs = {}
    for backend in ("torch", "numpy"):
        cfg = _recipe(paths, method, backend, parameters=params, out_dtype=out_dtype)
        outs[backend] = read_output(merge(cfg, tmp_path / backend, progress=False))
    assert outs["torch"].keys() == outs["numpy"].keys()
    for name, t in outs["torch"].items():
        assert outs["numpy"][name].dtype == t.dtype, name
        assert _raw(outs["numpy"][name]) == _raw(t), name
    want = DTYPES[out_dtype] if out_dtype else DTYPES[in_dtype]
    assert outs["numpy"]["emb.weight"].dtype == want
    assert torch.equal(outs["numpy"]["lm_head.weight"], outs["numpy"]["emb.weight"])
    assert torch.equal(outs["numpy"]["pos_ids"], torch.arange(12).reshape(1, 12))


def test_task_arithmetic_on_numpy_is_hand_checked(tmp_path: Path):
    paths = _models(tmp_path, torch.float32)
    out = read_output(merge(_recipe(paths, "task_arithmetic", "numpy"), tmp_path / "o"))
    sds = [load_file(str(p / "model.safetensors")) for p in paths]
    base = sds[0]["lin.bias"].double()
    want = base + sum(
        w * (sd["lin.bias"].double() - base)
        for w, sd in zip((0.7, -0.4, 1.3), sds[1:], strict=True)
    )
    assert torch.allclose(out["lin.bias"].double(), want, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "extra", "reason"),
    [
        ("ties", {"parameters": {"density": 0.5}}, "has no numpy kernel"),
        ("dare_linear", {"parameters": {"density": 0.5}}, "draws random numbers"),
    ],
)
def test_numpy_refuses_what_needs_torch_and_auto_falls_back(tmp_path: Path, method, extra, reason):
    paths = _models(tmp_path, torch.float32)
    with pytest.raises(ConfigError, match=reason):
        make_plan(_recipe(paths, method, "numpy", **extra))
    plan = make_plan(_recipe(paths, method, "auto", **extra))
    assert plan.backend.name == "torch"
    plan.close()
    plan = make_plan(_recipe(paths, "task_arithmetic", "auto"))
    assert plan.backend.name == "numpy"
    plan.close()


@pytest.mark.parametrize("in_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_numpy_backend_reports_non_finite_inputs(tmp_path: Path, in_dtype, bad):
    paths = _models(tmp_path, DTYPES[in_dtype])
    sd = load_file(str(paths[2] / "model.safetensors"))
    sd["lin.weight"][1, 2] = bad
    save_file(sd, str(paths[2] / "model.safetensors"))
    kind = "1 NaN and 0 Inf" if bad != bad else "0 NaN and 1 Inf"
    with pytest.raises(InputError, match=rf"'lin.weight' of .*b holds {kind}"):
        merge(_recipe(paths, "task_arithmetic", "numpy"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_task_arithmetic_merge_never_imports_torch(tmp_path: Path):
    paths = _models(tmp_path, torch.float32)
    recipe = tmp_path / "r.json"
    results = {}
    for method, params in (("task_arithmetic", {}), ("ties", {"density": 0.5})):
        recipe.write_text(json.dumps(_recipe(paths, method, "auto", parameters=params)))
        code = (
            "import sys; from modularevo.cli.main import main\n"
            f"sys.argv = ['modularevo', 'merge', {str(recipe)!r}, "
            f"{str(tmp_path / method)!r}, '--no-progress']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules)\n"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        results[method] = res.stdout.strip().splitlines()[-1]
    assert results == {"task_arithmetic": "False", "ties": "True"}


_F32 = st.floats(width=32, allow_nan=False, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(_F32, min_size=1, max_size=64))
def test_bfloat16_rounding_matches_torch_bit_for_bit(values: list[float]):
    x = np.array(values, dtype=np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = float32_to_bf16(x)
    assert np.array_equal(got, want)
    back = torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.array_equal(bf16_to_float32(got), back)


def test_bfloat16_nan_stays_nan():
    # torch's own NaN pattern differs between its scalar and vector paths; any NaN is fine
    x = np.array([np.nan, -np.nan, 1.0], dtype=np.float32)
    assert np.isnan(bf16_to_float32(float32_to_bf16(x))[:2]).all()
