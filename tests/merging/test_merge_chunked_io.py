"""The executor's chunked output check and bfloat16 scans: chunked merges write the same
bytes as whole-tensor ones, and NaN/Inf (also from narrowing) is caught either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import save_file

from modularevo import merge
from modularevo.errors import InputError
from modularevo.io.dtypes import bf16_has_nonfinite
from modularevo.merging import stream
from modularevo.merging.backend import NumpyBackend, TorchBackend, finite_limit


def _models(tmp: Path, dtype: torch.dtype) -> None:
    for i, name in enumerate(("base", "a", "b")):
        g = torch.Generator().manual_seed(i)
        sd = {"emb.weight": torch.randn(300, 16, generator=g), "b": torch.randn(7, generator=g)}
        (tmp / name).mkdir()
        save_file({k: v.to(dtype) for k, v in sd.items()}, str(tmp / name / "model.safetensors"))


def _recipe(tmp: Path, method: str, backend: str, out_dtype: str, **params: float) -> dict:
    return {
        "merge_method": method, "base_model": str(tmp / "base"), "backend": backend,
        "models": [{"model": str(tmp / m), "parameters": {"weight": w, **params}}
                   for m, w in (("a", 0.6), ("b", 0.3))],
        "out_dtype": out_dtype,
    }  # fmt: skip


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(
    ("method", "backend", "params"),
    [("task_arithmetic", "numpy", {}), ("task_arithmetic", "torch", {}),
     ("ties", "torch", {"density": 0.4})],
)  # fmt: skip
def test_chunked_merge_writes_the_bytes_of_the_whole_tensor_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_dtype, out_dtype, method, backend, params
):
    """4 800-element emb.weight in chunks of 1 000 (and a ragged last one) against
    one whole-tensor call: every output byte equal, for every dtype pair."""
    _models(tmp_path, in_dtype)
    recipe = _recipe(tmp_path, method, backend, out_dtype, **params)
    monkeypatch.setattr(stream, "CHUNK", 1000)
    merge(recipe, tmp_path / "chunked", progress=False)
    monkeypatch.setattr(stream, "CHUNK", 10**9)  # every tensor whole
    merge(recipe, tmp_path / "whole", progress=False)
    a, b = read_output(tmp_path / "chunked"), read_output(tmp_path / "whole")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


@pytest.mark.parametrize("chunk", [1000, 10**9])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_narrowing_overflow_is_refused_on_chunked_and_whole_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, backend: str
):
    """float32 results beyond float16's range become Inf when written as float16: refused,
    whether the check runs per chunk or on the whole tensor."""
    _models(tmp_path, torch.float32)
    monkeypatch.setattr(stream, "CHUNK", chunk)
    recipe = _recipe(tmp_path, "task_arithmetic", backend, "float16")
    recipe["models"][0]["parameters"]["weight"] = 1e6
    with pytest.raises(InputError, match="NaN/Inf value"):
        merge(recipe, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_finite_limits_follow_round_to_nearest_even():
    """The limit is the first float32 that narrows to Inf; the float32 just below stays finite."""
    for code, dt in (("BF16", torch.bfloat16), ("F16", torch.float16)):
        limit = torch.tensor(finite_limit(code), dtype=torch.float32)
        below = torch.nextafter(limit, torch.tensor(0.0))
        assert torch.isinf(limit.to(dt))
        assert torch.isfinite(below.to(dt))
    assert finite_limit("F32") == float("inf")
    for be in (NumpyBackend(), TorchBackend()):
        x = np.array([1.0, -65519.0], dtype=np.float32)
        t = x if isinstance(be, NumpyBackend) else torch.from_numpy(x)
        assert be.stays_finite(t, "F16")
        t[1] = -65520.0
        assert not be.stays_finite(t, "F16")
        t[1] = np.nan
        assert not be.stays_finite(t, "F32")


@pytest.mark.parametrize("bad", [0x7F80, 0xFF80, 0x7FC1, 0xFFFF])
def test_bf16_scan_finds_every_nan_and_inf_pattern(monkeypatch: pytest.MonkeyPatch, bad: int):
    """The blockwise exponent test, with a bad value in the last (ragged) block."""
    monkeypatch.setattr("modularevo.io.dtypes.SCAN_CHUNK", 64)
    bits = torch.randn(1000).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16).copy()
    assert not bf16_has_nonfinite(bits)
    bits[-3] = bad
    assert bf16_has_nonfinite(bits)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_unchanged_merge_check_compares_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
):
    """The check that refuses a merge writing the base back compares the first tensor in
    chunks (no whole-tensor copies): a change in the last chunk only is still a change,
    and an exact copy of the base is still refused."""
    from modularevo.merging import apply

    g = torch.Generator().manual_seed(0)
    base = {"emb.weight": torch.randn(300, 16, generator=g), "b": torch.randn(7, generator=g)}
    edited = {k: v.clone() for k, v in base.items()}
    edited["emb.weight"][-1, -1] += 1.0  # the very last entry of the 4 800
    for name, sd in (("base", base), ("edited", edited), ("copy", base)):
        (tmp_path / name).mkdir()
        save_file(sd, str(tmp_path / name / "model.safetensors"))
    monkeypatch.setattr(apply, "CHUNK", 1000)

    def recipe(model: str) -> dict:
        return {"merge_method": "task_arithmetic", "base_model": str(tmp_path / "base"),
                "backend": backend, "models": [{"model": str(tmp_path / model),
                                                "parameters": {"weight": 1.0}}]}  # fmt: skip

    merge(recipe("edited"), tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    assert torch.equal(out["emb.weight"], edited["emb.weight"])
    with pytest.raises(InputError, match="unchanged"):
        merge(recipe("copy"), tmp_path / "same", progress=False)
    assert not (tmp_path / "same").exists()
