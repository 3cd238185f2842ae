"""Shard-by-shard safetensors writer that streams tensors straight to disk.

Every output tensor's name, dtype and shape are known before the merge starts
(the plan), so each shard's header is written first and tensor bytes follow as
they are computed: no shard is ever held in memory. Writes run in a background
thread, overlapping disk work with computation. Tensors may be torch tensors or
numpy arrays (BF16 as ``uint16`` bit patterns); the writer itself needs no torch.
The files are standard safetensors (``safetensors.safe_open`` and ``transformers`` read them), and a
``model.safetensors.index.json`` maps every tensor to its shard.

Example:
    >>> specs = [TensorSpec("w", "F32", (2, 2))]                  # doctest: +SKIP
    >>> with ShardedWriter(out_dir, specs, shard_bytes=2**30) as w:  # doctest: +SKIP
    ...     w.write("w", torch.zeros(2, 2))
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from modularevo.io.dtypes import DType, dtype_of
from modularevo.io.reader import INDEX_NAME

if TYPE_CHECKING:
    from torch import Tensor

    Array = Tensor | np.ndarray

_ALIGN = 8


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one output tensor.

    Attributes:
        name: tensor name.
        dtype: a safetensors code (``"F32"``), a name (``"float32"``) or a torch dtype.
        shape: tensor shape.
    """

    name: str
    dtype: Any
    shape: tuple[int, ...]

    @property
    def dtype_info(self) -> DType:
        """The dtype as a :class:`~modularevo.io.dtypes.DType`."""
        return dtype_of(self.dtype)

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        n = self.dtype_info.itemsize
        for d in self.shape:
            n *= d
        return n


def assign_shards(specs: list[TensorSpec], shard_bytes: int) -> list[list[TensorSpec]]:
    """Split ``specs`` (in order) into shards of at most ``shard_bytes`` (one tensor may exceed)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards if shards[0] else []


def shard_name(i: int, n: int) -> str:
    """HF shard file name, e.g. ``model-00001-of-00002.safetensors``."""
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def _header_bytes(shard: list[TensorSpec], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for spec in shard:
        header[spec.name] = {
            "dtype": spec.dtype_info.code,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % _ALIGN)
    return len(raw).to_bytes(8, "little") + raw


def tensor_bytes(t: Array) -> memoryview:
    """The raw bytes of ``t`` (made contiguous) without copying when possible."""
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).reshape(-1).view(np.uint8).data
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(dtype_of("U8").torch).numpy())  # pyright: ignore[reportArgumentType]


def array_dtype(t: Array) -> DType:
    """The dtype of a torch tensor or numpy array (numpy ``uint16`` counts as BF16 bits)."""
    if isinstance(t, np.ndarray):
        return dtype_of("BF16") if t.dtype == np.uint16 else dtype_of(t.dtype.name)
    return dtype_of(t.dtype)


class ShardedWriter:
    """Write ``specs`` as HF shards into ``out_dir``, tensor by tensor, in order.

    Args:
        out_dir: destination folder (normally a temporary folder of ``atomic_dir``).
        specs: every output tensor, in the order they will be written.
        shard_bytes: target shard size.
        metadata: safetensors ``__metadata__`` (``format: pt`` is added).
        queue_size: tensors that may wait for the writer thread (bounds memory).
    """

    def __init__(
        self,
        out_dir: Path,
        specs: list[TensorSpec],
        *,
        shard_bytes: int,
        metadata: dict[str, str] | None = None,
        queue_size: int = 2,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.shards = assign_shards(specs, shard_bytes)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._order = [s for shard in self.shards for s in shard]
        self._next = 0
        self._queue: queue.Queue[Array | None] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shard-writer", daemon=True)
        self._thread.start()

    def write(self, name: str, tensor: Array) -> None:
        """Queue ``tensor`` as the next output tensor; it must be the next name of the plan."""
        self._raise_if_failed()
        spec = self._order[self._next]
        got = array_dtype(tensor)
        if name != spec.name or tuple(tensor.shape) != spec.shape or got != spec.dtype_info:
            raise RuntimeError(
                f"writer expected {spec.name} {spec.dtype_info.name} {list(spec.shape)}, got "
                f"{name} {got.name} {list(tensor.shape)}"
            )
        self._next += 1
        self._queue.put(tensor)

    def _run(self) -> None:
        fh: BinaryIO | None = None
        try:
            for i, shard in enumerate(self.shards):
                fh = (self.out_dir / shard_name(i, len(self.shards))).open("wb")
                fh.write(_header_bytes(shard, self.metadata))
                for _ in shard:
                    t = self._queue.get()
                    if t is None:
                        return
                    fh.write(tensor_bytes(t))
                    del t
                fh.close()
                fh = None
        except BaseException as exc:  # surfaced in the caller's thread
            self._error = exc
            while self._queue.get() is not None:
                pass
        finally:
            if fh is not None:
                fh.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for the writer thread, then write the index. Raises if anything is missing."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_if_failed()
        if self._next != len(self._order):
            raise RuntimeError(f"writer got {self._next} of {len(self._order)} tensors")
        self._write_index()

    def abort(self) -> None:
        """Stop the writer thread without writing the index (the caller discards the folder)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _write_index(self) -> None:
        weight_map = {}
        total = 0
        for i, shard in enumerate(self.shards):
            for spec in shard:
                weight_map[spec.name] = shard_name(i, len(self.shards))
                total += spec.nbytes
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (self.out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
