"""The fine-tunes of one round as independent jobs, run sequentially or in parallel.

Every job reads its start weights from a state file and writes ``tuned.safetensors``
(the done marker) into its own folder, so jobs share nothing in memory and can run
in separate processes. With ``jobs: auto`` one worker per visible GPU is used when
there are several, otherwise the jobs run one after another in this process.

Example:
    >>> split_jobs(["a", "b", "c"], 2)
    [['a', 'c'], ['b']]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")
TUNED_FILE = "tuned.safetensors"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tune of a round.

    Attributes:
        key: ``<start>-<task>-<kind>``: jobs with the same start model, task and kind
            are the same job (e.g. round 1's full fine-tunes, shared by every
            full-fine-tuning strategy).
        round: 1-based round (selects train shard ``round - 1``).
        task: dataset name.
        kind: ``module`` or ``full``.
        start_state: state file with the start weights.
        module: module file for ``kind == "module"``.
        out_dir: the job's folder.
        lr: the job's learning rate (a variant's), or ``None`` for the run's.
    """

    key: str
    round: int
    task: str
    kind: str
    start_state: str
    module: str | None
    out_dir: str
    lr: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def resolve_workers(jobs: int | str, *, num_gpus: int | None = None) -> int:
    """How many parallel workers to use.

    Args:
        jobs: an explicit count, or ``"auto"``: one per GPU when there are several,
            else 1 (the accelerate launcher's ``WORLD_SIZE`` counts as well).
        num_gpus: visible GPUs (default: ``torch.cuda.device_count()``).
    """
    if isinstance(jobs, int):
        return max(1, jobs)
    gpus = torch.cuda.device_count() if num_gpus is None else num_gpus
    if gpus > 1:
        return gpus
    return 1


def split_jobs(jobs: Sequence[T], workers: int) -> list[list[T]]:
    """Deal ``jobs`` round-robin into at most ``workers`` non-empty buckets (order kept)."""
    n = max(1, min(workers, len(jobs)))
    buckets: list[list[T]] = [[] for _ in range(n)]
    for i, job in enumerate(jobs):
        buckets[i % n].append(job)
    return [b for b in buckets if b]


RunnerFactory = Callable[[dict[str, Any]], Callable[[FinetuneJob], None]]


def run_jobs(
    jobs: Sequence[FinetuneJob],
    runner: Callable[[FinetuneJob], None],
    *,
    workers: int,
    config_json: dict[str, Any] | None = None,
    factory: RunnerFactory | None = None,
) -> None:
    """Run every job: in this process when ``workers == 1``, else one process per bucket.

    Args:
        jobs: the round's jobs (already-done ones return at once).
        runner: runs one job in this process (sequential path).
        workers: number of parallel workers.
        config_json: the run's config, rebuilt in each worker process (parallel path).
        factory: a module-level function ``config_json -> runner`` that each worker
            process calls (e.g. :func:`modularevo.evolution.runner.runner_from_json`).

    Raises:
        RuntimeError: a worker process failed.
    """
    if workers <= 1 or len(jobs) <= 1 or config_json is None or factory is None:
        for job in jobs:
            runner(job)
        return
    buckets = split_jobs(list(jobs), workers)
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // len(buckets))
    ctx = mp.get_context("spawn")
    procs = []
    for i, bucket in enumerate(buckets):
        device = str(i % gpus) if gpus else ""
        args = (factory, config_json, [j.to_json() for j in bucket], device, threads)
        p = ctx.Process(target=_worker, args=args, name=f"evolve-worker-{i}")
        p.start()
        procs.append(p)
    failed = []
    for p in procs:
        p.join()
        if p.exitcode != 0:
            failed.append(f"{p.name} (exit {p.exitcode})")
    if failed:
        raise RuntimeError(f"fine-tune workers failed: {', '.join(failed)}; see their logs")


def _worker(
    factory: RunnerFactory,
    config_json: dict[str, Any],
    jobs: list[dict[str, Any]],
    device: str,
    threads: int,
) -> None:
    if device:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    torch.set_num_threads(threads)
    runner = factory(config_json)
    for j in jobs:
        runner(FinetuneJob(**j))
