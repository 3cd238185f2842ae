"""Safetensors dtype codes, and their numpy and torch counterparts, without importing torch.

The merge engine names dtypes by their safetensors code (``"F32"``, ``"BF16"``…)
so that planning, reading and writing need no torch. numpy has no bfloat16:
numpy buffers of BF16 tensors hold the raw 16-bit patterns as ``uint16``
(:func:`bf16_to_float32` and :func:`float32_to_bf16` convert them exactly as
torch does: widening is exact, narrowing rounds to nearest even).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


@dataclass(frozen=True)
class DType:
    """One safetensors dtype.

    Attributes:
        code: the safetensors code, e.g. ``"F32"``.
        name: the torch/numpy style name, e.g. ``"float32"``.
        itemsize: bytes per element.
        is_float: whether merges combine tensors of this dtype.
        numpy: the numpy dtype of a buffer holding it (``uint16`` bit patterns for BF16).
    """

    code: str
    name: str
    itemsize: int
    is_float: bool
    numpy: str

    @property
    def torch(self) -> torch.dtype:
        """The torch dtype (imports torch)."""
        return getattr(torch, self.name)


_ALL = (
    DType("F64", "float64", 8, True, "float64"),
    DType("F32", "float32", 4, True, "float32"),
    DType("F16", "float16", 2, True, "float16"),
    DType("BF16", "bfloat16", 2, True, "uint16"),
    DType("I64", "int64", 8, False, "int64"),
    DType("I32", "int32", 4, False, "int32"),
    DType("I16", "int16", 2, False, "int16"),
    DType("I8", "int8", 1, False, "int8"),
    DType("U8", "uint8", 1, False, "uint8"),
    DType("BOOL", "bool", 1, False, "bool"),
)
BY_CODE: dict[str, DType] = {d.code: d for d in _ALL}
BY_NAME: dict[str, DType] = {d.name: d for d in _ALL}


def dtype_of(value: Any) -> DType:
    """The :class:`DType` of a code (``"F32"``), a name (``"float32"``) or a torch dtype.

    Raises:
        KeyError: for a dtype safetensors cannot store.
    """
    if isinstance(value, DType):
        return value
    text = str(value).removeprefix("torch.")
    if text in BY_CODE:
        return BY_CODE[text]
    return BY_NAME[text]


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (``uint16``); exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


BF16_EXPONENT = 0x7F80
"""The exponent bits of a bfloat16 pattern; all set: Inf or NaN."""
SCAN_CHUNK = 1 << 20
"""Elements per block of :func:`bf16_has_nonfinite` (2 MiB of uint16)."""


def bf16_has_nonfinite(bits: np.ndarray) -> bool:
    """Whether bfloat16 bit patterns (``uint16``) hold a NaN or Inf (exponent all ones).

    Scans in blocks of :data:`SCAN_CHUNK` into one reused buffer, so the check adds
    2 MiB, not a float32 copy of the tensor (twice its size) or a bool mask.
    """
    flat = bits.reshape(-1)
    buf = np.empty(min(SCAN_CHUNK, flat.size), dtype=np.uint16)
    for a in range(0, flat.size, SCAN_CHUNK):
        part = flat[a : a + SCAN_CHUNK]
        out = buf[: part.size]
        np.bitwise_and(part, BF16_EXPONENT, out=out)
        if int(out.max()) == BF16_EXPONENT:
            return True
    return False


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (``uint16``) of float32 values, rounded to nearest even.

    Matches ``torch.Tensor.to(torch.bfloat16)`` bit for bit for every non-NaN value;
    NaN becomes the quiet NaN 0x7FC0 (torch itself writes 0x7FC0 or 0xFFFF).
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (((bits >> 16) & 1) + 0x7FFF)  # wraps only for NaN patterns
    out = (rounded >> 16).astype(np.uint16)
    out[np.isnan(x)] = 0x7FC0
    return out
