import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modularevo.errors import InputError
from modularevo.io import ShardedWriter, TensorSpec, assign_shards, open_model, resolve_files


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(7, dtype=torch.int64),
        "d.flag": torch.tensor([True, False, True]),
        "e.half": torch.randn(2, 2, generator=g).half(),
    }


def _write(out: Path, tensors: dict[str, torch.Tensor], shard_bytes: int) -> None:
    specs = [TensorSpec(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with ShardedWriter(out, specs, shard_bytes=shard_bytes) as w:
        for n, t in tensors.items():
            w.write(n, t)


@pytest.mark.parametrize("shard_bytes", [10**9, 40])
def test_writer_roundtrip_through_safetensors_and_reader(tmp_path: Path, shard_bytes: int):
    tensors = _tensors()
    _write(tmp_path, tensors, shard_bytes)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert (len(shards) > 1) == (shard_bytes == 40)
    for n, t in tensors.items():
        with safe_open(str(tmp_path / index["weight_map"][n]), framework="pt") as f:
            assert torch.equal(f.get_tensor(n), t)
    reader = open_model(tmp_path)
    assert set(reader.names()) == set(tensors)
    for n, t in tensors.items():
        got = reader.read(n)
        assert got.dtype == t.dtype
        assert torch.equal(got, t)
        reader.release(n)
        assert torch.equal(reader.read(n), t)  # pages re-read after release
    reader.close()


def test_assign_shards_respects_size_and_order():
    specs = [TensorSpec(str(i), torch.float32, (10,)) for i in range(5)]  # 40 bytes each
    shards = assign_shards(specs, 100)
    assert [[s.name for s in sh] for sh in shards] == [["0", "1"], ["2", "3"], ["4"]]


def test_reader_single_file_and_folder(tmp_path: Path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    assert resolve_files(tmp_path) == [tmp_path / "model.safetensors"]
    assert torch.equal(open_model(tmp_path / "model.safetensors").read("w"), torch.ones(2))


def test_truncated_file_is_reported(tmp_path: Path):
    save_file({"w": torch.ones(100)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-50])
    with pytest.raises(InputError, match=r"corrupted or truncated.*'w'"):
        open_model(tmp_path)


def test_garbage_file_is_reported(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    )
    with pytest.raises(InputError, match="not valid JSON"):
        open_model(tmp_path)


def test_missing_shard_and_missing_model(tmp_path: Path):
    idx = {"weight_map": {"w": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(InputError, match="do not exist: model-00001-of-00002"):
        open_model(tmp_path)
    with pytest.raises(InputError, match="not found"):
        open_model(tmp_path / "nope")


def test_bin_only_folder_suggests_safetensors(tmp_path: Path):
    torch.save({"w": torch.ones(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(InputError, match="safe_serialization"):
        open_model(tmp_path)


def test_writer_rejects_out_of_order_tensor(tmp_path: Path):
    specs = [TensorSpec("a", torch.float32, (2,)), TensorSpec("b", torch.float32, (2,))]
    w = ShardedWriter(tmp_path, specs, shard_bytes=10**6)
    with pytest.raises(RuntimeError, match="expected a"):
        w.write("b", torch.zeros(2))
    w.abort()


def test_dtype_names_codes_and_torch_dtypes_agree():
    from modularevo.io.dtypes import BY_CODE, dtype_of

    for code, d in BY_CODE.items():
        assert dtype_of(code) is d
        assert dtype_of(d.name) is d
        assert dtype_of(d.torch) is d
        assert d.torch.itemsize == d.itemsize
        assert d.torch.is_floating_point == d.is_float
    with pytest.raises(KeyError):
        dtype_of("complex64")


def test_numpy_reads_equal_torch_reads_for_every_dtype(tmp_path: Path):
    import numpy as np

    g = torch.Generator().manual_seed(0)
    sd = {
        "f32": torch.randn(5, 3, generator=g),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "f16": torch.randn(2, 2, generator=g).half(),
        "i64": torch.arange(6).reshape(2, 3),
        "b": torch.tensor([True, False, True]),
    }
    save_file(sd, str(tmp_path / "model.safetensors"))
    r = open_model(tmp_path)
    for name, t in sd.items():
        arr = r.read_numpy(name)
        assert arr.shape == tuple(t.shape)
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        assert np.array_equal(arr.view(np.int16) if name == "bf16" else arr, raw.numpy())
        assert torch.equal(r.read(name), t)
        assert np.array_equal(r.read_flat_numpy(name, 1, 3), arr.reshape(-1)[1:3])
    r.close()
