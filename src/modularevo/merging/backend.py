"""Array backends of the streaming executor: torch, or numpy for torch-free merges.

The executor moves tensors through the same steps whatever they are made of: read
in the stored dtype, check for NaN/Inf, widen to float32, run the method, narrow
to the output dtype, write. :class:`TorchBackend` does these steps with torch and
runs every method. :class:`NumpyBackend` does them with numpy and runs the methods
whose tensor function is written with array operators only and declares so
(``Capabilities.numpy``: ``linear``, ``task_arithmetic``). A merge on it never
imports torch, which saves 2-4 s of start-up, more than the arithmetic of a
GPT-2-sized task-arithmetic merge on 2 cores. Both backends give the same bytes:
the kernels apply the same float32 operations in the same order, and bfloat16 is
narrowed with torch's round-to-nearest-even (:mod:`modularevo.io.dtypes`).

:func:`choose_backend` picks one from the recipe's ``backend`` key (``auto``,
``torch`` or ``numpy``) and says why numpy cannot run a recipe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from modularevo.errors import ConfigError, InputError
from modularevo.io.dtypes import (
    BY_CODE,
    SCAN_CHUNK,
    bf16_has_nonfinite,
    bf16_to_float32,
    float32_to_bf16,
)
from modularevo.io.reader import ModelReader
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch

    from modularevo.merging.spec import MergeMethod
else:
    torch = LazyModule("torch")

__all__ = ["Backend", "NumpyBackend", "TorchBackend", "choose_backend", "numpy_blockers"]


class Backend(Protocol):
    """The array operations the executor needs (``Any`` stands for a tensor or array)."""

    name: str

    def read(self, reader: ModelReader, name: str) -> Any:
        """Tensor ``name`` of ``reader`` in its stored dtype."""
        ...

    def check_finite(self, x: Any, name: str, where: str) -> None:
        """Raise :class:`InputError` if ``x`` holds NaN or Inf."""
        ...

    def to_float32(self, x: Any) -> Any:
        """``x`` as float32 (no copy if it already is)."""
        ...

    def cast(self, x: Any, code: str) -> Any:
        """float32 ``x`` narrowed to the dtype ``code`` (e.g. ``"BF16"``)."""
        ...

    def stays_finite(self, x: Any, code: str) -> bool:
        """Whether float32 ``x`` holds no NaN/Inf and none appears when it is narrowed to
        ``code`` (two reductions, no temporaries: see :func:`finite_limit`)."""
        ...

    def empty(self, shape: tuple[int, ...], code: str) -> Any:
        """An uninitialised buffer of dtype ``code``."""
        ...

    def can_overwrite(
        self, x: Any, others: Sequence[Any], shape: tuple[int, ...], code: str
    ) -> bool:
        """Whether ``x`` can hold the output (dtype ``code``, ``shape``): a contiguous buffer
        sharing no memory with ``others``."""
        ...

    def compute_threads(self, chunked: bool) -> contextlib.AbstractContextManager[Any]:
        """A thread pool sharing the chunks of chunked merges (or ``None``)."""
        ...


_ROUNDS_TO_INF = {"BF16": float(np.uint32(0x7F7F8000).view(np.float32)), "F16": 65520.0}


def finite_limit(code: str) -> float:
    """The smallest float32 magnitude that is not finite once narrowed to ``code``
    (round to nearest even: bfloat16's largest value plus half an ulp, 0x7F7F8000;
    float16's 65504 + 16); ``inf`` for float32 and wider. A float32 array ``x`` stays
    finite iff ``-limit < x.min()`` and ``x.max() < limit`` (NaN fails both)."""
    return _ROUNDS_TO_INF.get(code, float("inf"))


def nonfinite_error(name: str, where: str, n_nan: int, n_inf: int) -> InputError:
    """The error for NaN/Inf found in tensor ``name`` of model ``where``."""
    return InputError(
        f"tensor {name!r} of {where} holds {n_nan} NaN and {n_inf} Inf value(s); expected "
        "finite weights. The checkpoint is broken: re-save or re-train it, or leave it out."
    )


class TorchBackend:
    """Runs every method on torch tensors (CPU)."""

    name = "torch"

    def read(self, reader: ModelReader, name: str) -> Any:
        return reader.read(name)

    def check_finite(self, x: Any, name: str, where: str) -> None:
        # bf16: test the exponent bits; others: float32 sums of cache-sized pieces. A
        # whole-tensor sum(dtype=float32) first widens the tensor (+412 MB for a 1.4B
        # model's bf16 embedding, per reader thread) and takes ~20x longer on bf16.
        if not x.is_floating_point() or x.numel() == 0:
            return
        flat = x.reshape(-1)
        if x.dtype == torch.bfloat16:
            if not bf16_has_nonfinite(flat.view(torch.int16).numpy().view(np.uint16)):
                return
        elif all(torch.isfinite(p.sum(dtype=torch.float32)) for p in flat.split(SCAN_CHUNK)):
            return
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        if n_nan or n_inf:  # else the sum overflowed; the values are finite
            raise nonfinite_error(name, where, n_nan, n_inf)

    def to_float32(self, x: Any) -> Any:
        return x.float()

    def stays_finite(self, x: Any, code: str) -> bool:
        if x.numel() == 0:
            return True
        lo, hi = torch.aminmax(x)  # NaN propagates into both
        limit = finite_limit(code)
        return bool(-limit < float(lo)) and bool(float(hi) < limit)

    def cast(self, x: Any, code: str) -> Any:
        return x.to(BY_CODE[code].torch)

    def empty(self, shape: tuple[int, ...], code: str) -> Any:
        return torch.empty(shape, dtype=BY_CODE[code].torch)

    def can_overwrite(
        self, x: Any, others: Sequence[Any], shape: tuple[int, ...], code: str
    ) -> bool:
        if not (
            isinstance(x, torch.Tensor)
            and x.dtype == BY_CODE[code].torch
            and tuple(x.shape) == shape
            and x.is_contiguous()
        ):
            return False
        ptr = x.untyped_storage().data_ptr()
        return all(o is None or o.untyped_storage().data_ptr() != ptr for o in others)

    @contextlib.contextmanager
    def compute_threads(self, chunked: bool) -> Iterator[ThreadPoolExecutor | None]:
        """Chunk threads with torch on one intra-op thread meanwhile.

        Whole chunks per thread scale better than torch's per-op threading (which
        also stalls badly on a busy machine). Unchunked methods keep torch's own
        threading and get no pool.
        """
        threads = torch.get_num_threads()
        if not chunked or threads < 2:
            yield None
            return
        torch.set_num_threads(1)
        try:
            with _pool(threads) as pool:
                yield pool
        finally:
            torch.set_num_threads(threads)


class NumpyBackend:
    """Runs methods with an operator-only kernel on numpy arrays, without torch.

    BF16 tensors are held as ``uint16`` bit patterns between reading and writing.

    Args:
        threads: chunk threads (numpy releases the GIL inside its loops).
    """

    name = "numpy"

    def __init__(self, threads: int | None = None) -> None:
        import os

        self.threads = threads or max(1, len(os.sched_getaffinity(0)))

    def read(self, reader: ModelReader, name: str) -> Any:
        return reader.read_numpy(name)

    def check_finite(self, x: np.ndarray, name: str, where: str) -> None:
        if x.size == 0 or x.dtype.kind not in "fu" or (x.dtype.kind == "u" and x.itemsize != 2):
            return
        if x.dtype == np.uint16:  # bfloat16 bits: test the exponent, widen nothing
            if not bf16_has_nonfinite(x):
                return
            f = bf16_to_float32(x)
        else:
            f = x
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(f.sum(dtype=np.float32)):
                    return
        n_nan, n_inf = int(np.isnan(f).sum()), int(np.isinf(f).sum())
        if n_nan or n_inf:
            raise nonfinite_error(name, where, n_nan, n_inf)

    def to_float32(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint16:
            return bf16_to_float32(x)
        return x.astype(np.float32, copy=False)

    def stays_finite(self, x: np.ndarray, code: str) -> bool:
        if x.size == 0:
            return True
        limit = finite_limit(code)
        return bool(-limit < float(x.min())) and bool(float(x.max()) < limit)

    def cast(self, x: np.ndarray, code: str) -> np.ndarray:
        if code == "BF16":
            return float32_to_bf16(x)
        return x.astype(BY_CODE[code].numpy, copy=False)

    def empty(self, shape: tuple[int, ...], code: str) -> np.ndarray:
        return np.empty(shape, dtype=BY_CODE[code].numpy)

    def can_overwrite(
        self, x: Any, others: Sequence[Any], shape: tuple[int, ...], code: str
    ) -> bool:
        return False  # the numpy merges (task arithmetic, linear) gain little: left as they are

    @contextlib.contextmanager
    def compute_threads(self, chunked: bool) -> Iterator[ThreadPoolExecutor | None]:
        if not chunked or self.threads < 2:
            yield None
            return
        with _pool(self.threads) as pool:
            yield pool


@contextlib.contextmanager
def _pool(threads: int) -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(threads, thread_name_prefix="merge-chunk")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def numpy_blockers(
    method: MergeMethod, *, needs_thresholds: bool, chunk_modes: Sequence[str | None]
) -> list[str]:
    """Why the numpy backend cannot run this merge (empty: it can).

    Args:
        method: the merge method.
        needs_thresholds: whether a global |τ| pre-pass is needed.
        chunk_modes: the chunk modes the merge's parameter sets lead to.
    """
    reasons = []
    if not method.capabilities.numpy:
        reasons.append(f"method {method.name!r} has no numpy kernel")
    if method.randomized:
        reasons.append(f"method {method.name!r} draws random numbers (torch generators)")
    if method.uses_masks:
        reasons.append(f"method {method.name!r} reads module masks")
    if needs_thresholds:
        reasons.append("the global |τ| threshold pre-pass runs on torch")
    if "cuts" in chunk_modes:
        reasons.append("per-tensor top-k trimming runs on torch")
    return reasons


def choose_backend(requested: str, blockers: list[str]) -> Backend:
    """The backend for a merge: ``auto`` takes numpy when nothing blocks it.

    Raises:
        ConfigError: ``numpy`` was requested but the merge needs torch.
    """
    if requested == "torch" or (requested == "auto" and blockers):
        return TorchBackend()
    if blockers:
        raise ConfigError(
            [f"backend: numpy cannot run this merge: {r}; use backend: auto or torch"
             for r in blockers]
        )  # fmt: skip
    return NumpyBackend()
