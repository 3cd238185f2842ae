"""Tensor-by-tensor reading of safetensors models with positioned reads.

Inputs may be a Hugging Face model folder, a single ``.safetensors`` file, or a
``model.safetensors.index.json`` with its shards. Headers are parsed and checked
up front (dtype, shape, byte ranges against the file size), so a truncated or
corrupted file is reported before any weight is read.

A tensor (or a flat slice of one) is read with ``os.preadv`` straight into a
fresh torch buffer, using the byte offsets of the header. Unlike a memory map,
this never makes file pages part of the process's resident set: the memory a
merge holds is exactly the tensors it is working on, so its peak RSS is bounded
by a few tensors (the OS page cache still speeds up repeated reads). Positioned
reads release the GIL and share no file position, so several threads may read
from one reader at once. :meth:`ModelReader.read_numpy` reads into numpy buffers
and never imports torch (the merge engine's numpy path).

Example:
    >>> reader = open_model("path/to/model")                   # doctest: +SKIP
    >>> w = reader.read("transformer.wte.weight")              # doctest: +SKIP
    >>> part = reader.read_flat("transformer.wte.weight", 0, 1024)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modularevo.errors import InputError
from modularevo.io.dtypes import BY_CODE, DType
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: file, dtype (safetensors code), shape and absolute byte range."""

    name: str
    file: Path
    code: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def dtype_info(self) -> DType:
        """The stored dtype (code, name, item size)."""
        return BY_CODE[self.code]

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype as a torch dtype (imports torch)."""
        return BY_CODE[self.code].torch

    @property
    def is_float(self) -> bool:
        """True for floating-point tensors (the ones a merge combines)."""
        return BY_CODE[self.code].is_float


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
        dtype = BY_CODE[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        b, e = (int(x) for x in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        return _corrupt(path, f"entry for tensor {name!r} is malformed or has an unsupported dtype")
    info = TensorInfo(name, path, dtype.code, shape, base + b, base + e)
    expected = info.numel * dtype.itemsize
    if e - b != expected or b < 0 or base + e > size:
        _corrupt(
            path,
            f"tensor {name!r} claims bytes [{b}, {e}) of a {size - base}-byte data section "
            f"({expected} bytes expected for {dtype.name} {list(shape)})",
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
    """All tensors of one model, readable one at a time (or in flat slices).

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
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        """Tensor names in file order (shard, then byte offset)."""
        return sorted(
            self.tensors, key=lambda n: (str(self.tensors[n].file), self.tensors[n].start)
        )

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with self._lock:
                fd = self._fds.get(file)
                if fd is None:
                    fd = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    self._fds[file] = fd
        return fd

    def read(self, name: str) -> Tensor:
        """The tensor ``name`` in its stored dtype, in a fresh buffer the caller owns."""
        info = self.tensors[name]
        return self.read_flat(name, 0, info.numel).reshape(info.shape)

    def read_flat(self, name: str, start: int, stop: int) -> Tensor:
        """Elements ``[start, stop)`` of the flattened tensor ``name``, in a fresh 1-D buffer.

        Raises:
            InputError: if the file is shorter than its header says (changed on disk).
        """
        info = self.tensors[name]
        flat = torch.from_numpy(self.read_flat_numpy(name, start, stop))
        return flat.view(torch.bfloat16) if info.code == "BF16" else flat

    def read_numpy(self, name: str) -> np.ndarray:
        """Like :meth:`read`, as a numpy array (BF16 as ``uint16`` bit patterns); no torch."""
        info = self.tensors[name]
        return self.read_flat_numpy(name, 0, info.numel).reshape(info.shape)

    def read_flat_numpy(self, name: str, start: int, stop: int) -> np.ndarray:
        """Like :meth:`read_flat`, as a numpy array (BF16 as ``uint16`` bit patterns)."""
        info = self.tensors[name]
        stop = min(stop, info.numel)
        dtype = info.dtype_info
        out = np.empty(max(0, stop - start), dtype=dtype.numpy)
        if out.size:
            self._pread(info.file, out.view(np.uint8).data, info.start + start * dtype.itemsize)
        return out

    def _pread(self, file: Path, view: memoryview, offset: int) -> None:
        fd = self._fd(file)
        done, total = 0, len(view)
        while done < total:  # Linux returns at most ~2 GiB per call
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise InputError(
                    f"safetensors file {str(file)!r} ended early at byte {offset + done}; it "
                    "changed or was truncated during the merge. Re-save it and run again."
                )
            done += n

    def release(self, name: str) -> None:
        """Kept for compatibility: reads hold no file pages, so there is nothing to drop."""

    def close(self) -> None:
        """Close the open files (tensors read earlier stay valid)."""
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

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
