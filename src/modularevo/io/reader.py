"""Memory-mapped, tensor-by-tensor reading of safetensors models.

Inputs may be a Hugging Face model folder, a single ``.safetensors`` file, or a
``model.safetensors.index.json`` with its shards. Headers are parsed and checked
up front (dtype, shape, byte ranges against the file size), so a truncated or
corrupted file is reported before any weight is read. A tensor is returned as a
zero-copy view of the mapped file; :meth:`ModelReader.release` drops its pages
from the process's resident set once the caller is done with it, which keeps the
peak memory of a streaming merge bounded by a few tensors.

Example:
    >>> reader = open_model("path/to/model")          # doctest: +SKIP
    >>> w = reader.read("transformer.wte.weight")     # doctest: +SKIP
    >>> reader.release("transformer.wte.weight")      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 2**20

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_CODES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: file, dtype, shape and absolute byte range."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_float(self) -> bool:
        """True for floating-point tensors (the ones a merge combines)."""
        return self.dtype in FLOAT_DTYPES


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and check the header of one safetensors file.

    Returns:
        (tensors by name, the ``__metadata__`` mapping).

    Raises:
        InputError: if the file is missing, truncated, or its header is not valid.
    """
    if not path.is_file():
        raise InputError(f"safetensors file {str(path)!r} does not exist; check the model path")
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        n: int = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            _corrupt(path, f"header length field says {n} bytes but the file has {size} bytes")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            header = _corrupt(path, f"header is not valid JSON ({exc})")
    if not isinstance(header, dict):
        _corrupt(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    infos = {name: _parse_entry(path, name, entry, base, size) for name, entry in header.items()}
    return infos, meta


def _parse_entry(path: Path, name: str, entry: Any, base: int, size: int) -> TensorInfo:
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        b, e = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        return _corrupt(path, f"entry for tensor {name!r} is malformed or has an unsupported dtype")
    info = TensorInfo(name, path, dtype, shape, base + b, base + e)
    expected = info.numel * dtype.itemsize
    if e - b != expected or b < 0 or base + e > size:
        _corrupt(
            path,
            f"tensor {name!r} claims bytes [{b}, {e}) of a {size - base}-byte data section "
            f"({expected} bytes expected for {dtype} {list(shape)})",
        )
    return info


def _corrupt(path: Path, what: str) -> Any:
    raise InputError(
        f"safetensors file {str(path)!r} is corrupted or truncated: {what}. "
        "Re-download or re-save the model (e.g. model.save_pretrained(...))."
    )


def resolve_files(path: str | Path) -> list[Path]:
    """The safetensors files that make up the model at ``path``.

    Raises:
        InputError: if ``path`` holds no safetensors weights.
    """
    p = Path(path)
    if p.is_file():
        if p.name.endswith(".json"):
            return _files_from_index(p)
        return [p]
    if not p.is_dir():
        raise InputError(
            f"model {str(p)!r} not found: expected a local model folder, a .safetensors file or "
            f"a {INDEX_NAME}; hub ids are not downloaded (save the model locally first)"
        )
    if (p / INDEX_NAME).is_file():
        return _files_from_index(p / INDEX_NAME)
    if (p / SINGLE_NAME).is_file():
        return [p / SINGLE_NAME]
    found = sorted(p.glob("*.safetensors"))
    if found:
        return found
    bins = sorted(x.name for x in p.glob("*.bin"))
    hint = f" (found {', '.join(bins)}: re-save with safe_serialization=True)" if bins else ""
    raise InputError(f"model folder {str(p)!r} holds no .safetensors weights{hint}")


def _files_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"index {str(index)!r} is not a valid safetensors index ({exc}); it needs a "
            '"weight_map" from tensor names to shard files'
        ) from None
    missing = [f for f in files if not (index.parent / f).is_file()]
    if missing:
        raise InputError(
            f"index {str(index)!r} lists shard(s) that do not exist: {', '.join(missing)}; "
            "copy the missing shards or re-save the model"
        )
    return [index.parent / f for f in files]


class ModelReader:
    """All tensors of one model, readable one at a time through memory maps.

    Args:
        path: model folder, ``.safetensors`` file or index file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.files = resolve_files(path)
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        for f in self.files:
            infos, meta = read_header(f)
            self.metadata.update(meta)
            for name, info in infos.items():
                if name in self.tensors:
                    raise InputError(
                        f"tensor {name!r} appears in two shards of {str(self.path)!r} "
                        f"({self.tensors[name].file.name} and {f.name}); fix the checkpoint"
                    )
                self.tensors[name] = info
        self._maps: dict[Path, mmap.mmap] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        """Tensor names in file order (shard, then byte offset)."""
        return sorted(
            self.tensors, key=lambda n: (str(self.tensors[n].file), self.tensors[n].start)
        )

    def _map(self, file: Path) -> mmap.mmap:
        mm = self._maps.get(file)
        if mm is None:
            with file.open("rb") as fh:
                # A private mapping is writable (no torch warning) yet never copies unless written.
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[file] = mm
        return mm

    def read(self, name: str) -> Tensor:
        """The tensor ``name`` in its stored dtype, as a view of the mapped file.

        The view must not be written to (a merge method never modifies inputs).
        """
        info = self.tensors[name]
        if info.numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        mm = self._map(info.file)
        if info.start % info.dtype.itemsize:
            raw = torch.frombuffer(
                mm, dtype=torch.uint8, count=info.end - info.start, offset=info.start
            )
            return raw.clone().view(info.dtype).reshape(info.shape)
        flat = torch.frombuffer(mm, dtype=info.dtype, count=info.numel, offset=info.start)
        return flat.reshape(info.shape)

    def release(self, name: str) -> None:
        """Drop the pages of ``name`` from this process's memory (they stay in the OS cache)."""
        info = self.tensors[name]
        mm = self._maps.get(info.file)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = info.start - info.start % page
        length = info.end - start
        if length > 0:
            mm.madvise(mmap.MADV_DONTNEED, start, length)

    def close(self) -> None:
        """Close every memory map (views read earlier must not be used afterwards)."""
        for mm in self._maps.values():
            with contextlib.suppress(BufferError):  # a view is alive; the GC unmaps it later
                mm.close()
        self._maps.clear()

    def __enter__(self) -> ModelReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(path: str | Path) -> ModelReader:
    """Open the model at ``path`` for tensor-by-tensor reads (headers checked now).

    Raises:
        InputError: if the path holds no safetensors weights or a file is corrupted.
    """
    return ModelReader(path)


def model_dir(path: str | Path) -> Path | None:
    """The folder holding the model's config/tokenizer files, if ``path`` is a folder model."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file() and (p.parent / "config.json").is_file():
        return p.parent
    return None


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes (0 if it is missing)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
