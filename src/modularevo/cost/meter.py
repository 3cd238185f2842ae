"""Inference cost of models: parameters, FLOPs, disk size, latency, throughput, peak memory.

Several models are measured *interleaved* (one timed run of each in turn), so a
load spike from other processes on a shared machine hits all of them alike and
their ratio stays honest. Latency is the median of ``repeats`` timed runs after
``warmup`` untimed ones.

Peak memory is the growth of the process's peak resident set (Linux
``VmHWM``, reset through ``/proc/self/clear_refs``) over one forward pass; where
that is unavailable, ``tracemalloc`` (Python allocations only) is used and the
``memory_source`` field says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

InputFn = Callable[[int, int], Mapping[str, Tensor]]


def token_inputs(vocab_size: int, *, seed: int = 0) -> InputFn:
    """An input builder: (batch, seq_len) -> ``input_ids`` and ``attention_mask``."""

    def build(batch: int, seq_len: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab_size, (batch, seq_len), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return build


@dataclass
class Point:
    """Latency and throughput of one model at one (batch, seq_len)."""

    batch: int
    seq_len: int
    latency_ms: float
    latency_iqr_ms: float
    throughput: float  # sequences per second
    flops: int
    peak_mem_mb: float


@dataclass
class CostReport:
    """Everything measured about one model."""

    name: str
    params: int
    nonzero_params: int
    disk_bytes: int | None
    points: list[Point] = field(default_factory=list)
    memory_source: str = "rss"

    def point(self, batch: int, seq_len: int) -> Point:
        """The measurement at (batch, seq_len)."""
        for p in self.points:
            if (p.batch, p.seq_len) == (batch, seq_len):
                return p
        raise KeyError((batch, seq_len))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, non-zero parameters); tied tensors are counted once."""
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def disk_size(path: str | Path | None) -> int | None:
    """Bytes of a file, or of the weight files in a folder (None when no path)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    exts = {".safetensors", ".bin", ".pt", ".pth"}
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix in exts)


def count_flops(model: nn.Module, inputs: Mapping[str, Tensor]) -> int:
    """FLOPs of one forward pass, from PyTorch's ``FlopCounterMode``."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(**inputs)
    return int(counter.get_total_flops())


def _read_hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, Any]]:
    """Measure peak memory growth (MB) of the block into ``out["mb"]``."""
    out: dict[str, Any] = {"mb": float("nan"), "source": "rss"}
    rss0 = _rss_kb()
    if rss0 is not None and _reset_hwm():
        yield out
        hwm = _read_hwm_kb()
        out["mb"] = max(0, (hwm or rss0) - rss0) / 1024
        return
    out["source"] = "tracemalloc"
    tracemalloc.start()
    try:
        yield out
        out["mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def interleaved_latency(
    models: Mapping[str, nn.Module],
    inputs: Mapping[str, Tensor],
    *,
    repeats: int = 10,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Seconds per forward pass of each model, timed in turn, after ``warmup`` runs each."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m(**inputs)
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(**inputs)
                times[k].append(time.perf_counter() - t0)
    return times


def _iqr(xs: list[float]) -> float:
    if len(xs) < 4:
        return 0.0
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def measure_cost(
    models: Mapping[str, nn.Module],
    make_inputs: InputFn,
    *,
    batch_sizes: tuple[int, ...] = (1, 8),
    seq_lens: tuple[int, ...] = (64, 128),
    repeats: int = 10,
    warmup: int = 2,
    disk_paths: Mapping[str, str | Path] | None = None,
    threads: int | None = None,
) -> list[CostReport]:
    """Measure each model's cost, models interleaved at every (batch, seq_len).

    Args:
        models: name -> model (put in eval mode here).
        make_inputs: (batch, seq_len) -> keyword inputs of the forward pass.
        batch_sizes, seq_lens: the grid measured.
        repeats, warmup: timed and untimed runs per point and model.
        disk_paths: name -> saved file/folder, for size on disk.
        threads: ``torch.set_num_threads`` during the measurement (restored after).

    Returns:
        One :class:`CostReport` per model, in the order given.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        reports = _init_reports(models, disk_paths or {})
        for b in batch_sizes:
            for s in seq_lens:
                _measure_point(models, make_inputs(b, s), reports, (b, s, repeats, warmup))
        return list(reports.values())
    finally:
        torch.set_num_threads(old_threads)


def _init_reports(
    models: Mapping[str, nn.Module], disk: Mapping[str, Any]
) -> dict[str, CostReport]:
    out = {}
    for k, m in models.items():
        m.eval()
        total, nz = count_params(m)
        out[k] = CostReport(k, total, nz, disk_size(disk.get(k)))
    return out


def _measure_point(
    models: Mapping[str, nn.Module],
    inputs: Mapping[str, Tensor],
    reports: dict[str, CostReport],
    point: tuple[int, int, int, int],
) -> None:
    b, s, repeats, warmup = point
    times = interleaved_latency(models, inputs, repeats=repeats, warmup=warmup)
    for k, m in models.items():
        with torch.inference_mode(), peak_memory() as mem:
            m(**inputs)
        reports[k].memory_source = mem["source"]
        med = statistics.median(times[k])
        reports[k].points.append(
            Point(b, s, med * 1e3, _iqr(times[k]) * 1e3, b / med, count_flops(m, inputs), mem["mb"])
        )
        log.info("%s b=%d s=%d: %.1f ms", k, b, s, med * 1e3)


def cpu_name() -> str:
    """The CPU model name (Linux), for reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine
