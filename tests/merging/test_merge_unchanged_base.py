"""A merge whose output equals its base model is refused (or, with all weights 0, warned)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import save_file

from modularevo.errors import InputError
from modularevo.merging.apply import merge


def _save(path: Path, sd: dict[str, torch.Tensor]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path / "model.safetensors"))


def _base() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "emb.weight": torch.randn(50, 8, generator=g),
        "lin.weight": torch.randn(4, 8, generator=g),
    }


def _recipe(tmp: Path, method: str, weights: list[float], **params) -> dict:
    return {
        "merge_method": method,
        "base_model": str(tmp / "base"),
        "models": [
            {"model": str(tmp / f"m{i}"), "parameters": {"weight": w}}
            for i, w in enumerate(weights)
        ],
        "parameters": params,
    }


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_copies_of_the_base_are_refused_and_nothing_is_written(tmp_path: Path, method: str):
    base = _base()
    for name in ("base", "m0", "m1"):
        _save(tmp_path / name, base)
    cfg = _recipe(tmp_path, method, [1.0, 0.5])
    with pytest.raises(InputError, match=r"write the base model back unchanged: all 2 merged"):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_one_changed_tensor_is_enough(tmp_path: Path):
    base = _base()
    _save(tmp_path / "base", base)
    moved = dict(base)
    moved["lin.weight"] = base["lin.weight"] + 0.25
    _save(tmp_path / "m0", moved)
    merge(_recipe(tmp_path, "task_arithmetic", [1.0]), tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    assert torch.equal(out["emb.weight"], base["emb.weight"])
    assert not torch.equal(out["lin.weight"], base["lin.weight"])


def test_all_weights_zero_writes_the_base_with_a_warning(tmp_path: Path, caplog):
    base = _base()
    _save(tmp_path / "base", base)
    moved = {n: t + 1 for n, t in base.items()}
    _save(tmp_path / "m0", moved)
    with caplog.at_level(logging.WARNING):
        merge(_recipe(tmp_path, "task_arithmetic", [0.0]), tmp_path / "out", progress=False)
    assert "every model has weight 0" in caplog.text
    assert torch.equal(read_output(tmp_path / "out")["lin.weight"], base["lin.weight"])


def test_a_fine_tune_saved_as_a_bare_encoder_merges_into_its_masked_lm_base(tmp_path: Path):
    # the masked-LM base names `bert.encoder.…`, the fine-tune `encoder.…`: one naming
    g = torch.Generator().manual_seed(1)
    names = [f"encoder.layer.{i}.attention.self.query.weight" for i in range(3)]
    base = {f"bert.{n}": torch.randn(4, 4, generator=g) for n in names}
    base["cls.predictions.bias"] = torch.zeros(4)
    _save(tmp_path / "base", base)
    _save(tmp_path / "m0", {n: base[f"bert.{n}"] + 0.5 for n in names})
    cfg = _recipe(tmp_path, "task_arithmetic", [1.0])
    cfg["missing_tensors"] = "base"
    merge(cfg, tmp_path / "out", progress=False)
    out = read_output(tmp_path / "out")
    assert sorted(out) == sorted(base)
    for n in names:
        torch.testing.assert_close(out[f"bert.{n}"], base[f"bert.{n}"] + 0.5)
    assert torch.equal(out["cls.predictions.bias"], base["cls.predictions.bias"])


def test_models_of_another_architecture_are_not_renamed(tmp_path: Path):
    base = _base()
    _save(tmp_path / "base", base)
    _save(tmp_path / "m0", {"x.y": torch.ones(3), "x.z": torch.ones(2)})
    cfg = _recipe(tmp_path, "task_arithmetic", [1.0])
    cfg["missing_tensors"] = "base"
    with pytest.raises(InputError, match="share no tensor with the base"):
        merge(cfg, tmp_path / "out", progress=False)
