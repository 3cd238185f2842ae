"""Pickled PyTorch checkpoints (``pytorch_model*.bin``) as merge inputs, without running code.

The merge reads safetensors with positioned reads. A model folder that only holds
``.bin`` weights is re-saved once into a scratch folder of safetensors shards, loading
each file with ``torch.load(weights_only=True)`` (tensors and plain containers only: a
pickle that would call arbitrary code is refused) and memory-mapped where the file is a
zip checkpoint, so tensors are read one at a time while the shards are streamed out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.io.dtypes import dtype_of
from modularevo.io.writer import ShardedWriter, TensorSpec
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")

BIN_INDEX = "pytorch_model.bin.index.json"


def bin_files(path: str | Path) -> list[Path]:
    """The ``.bin`` weight files of a model folder (via its index when there is one), or []."""
    p = Path(path)
    if p.is_file() and p.suffix == ".bin":
        return [p]
    if not p.is_dir():
        return []
    if (p / BIN_INDEX).is_file():
        try:
            names = set(
                json.loads((p / BIN_INDEX).read_text(encoding="utf-8"))["weight_map"].values()
            )
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise InputError(f"{p / BIN_INDEX} is not a valid checkpoint index ({exc})") from None
        return [p / n for n in sorted(names)]
    return sorted(p.glob("pytorch_model*.bin")) or sorted(p.glob("*.bin"))


def _load(file: Path) -> dict[str, Any]:
    try:
        try:
            sd = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) checkpoint cannot be memory-mapped
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"cannot load {str(file)!r} as weights only ({type(exc).__name__}: {exc}); a "
            "checkpoint that needs pickled code is refused; re-save it as safetensors"
        ) from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{str(file)!r} does not hold a state dict of tensors")
    return sd


def convert_bin(files: list[Path], dest: Path, *, shard_bytes: int = 2 << 30) -> Path:
    """Re-save the ``.bin`` ``files`` of one model as safetensors shards in ``dest``.

    Raises:
        InputError: a file that does not load as weights only, or a tensor name that
            appears in two files.
    """
    loaded = [_load(f) for f in files]
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for sd in loaded:
        for name, t in sd.items():
            if name in seen:
                raise InputError(f"tensor {name!r} appears in two of {[f.name for f in files]}")
            seen.add(name)
            specs.append(TensorSpec(name, dtype_of(t.dtype).code, tuple(t.shape)))
    dest.mkdir(parents=True, exist_ok=True)
    with ShardedWriter(dest, specs, shard_bytes=shard_bytes) as writer:
        for sd in loaded:
            for name, t in sd.items():
                writer.write(name, t.contiguous())
    return dest
