"""Tensor-level work of the streaming executor: prefetched reads and (chunked) merges.

:class:`Prefetcher` reads the inputs of the next tensors in a small thread pool
(positioned file reads and the NaN/Inf check release the GIL) while the main
thread merges the current one, so reading and computing use both cores. It keeps
at most ``ahead_bytes`` of inputs in flight besides the tensor being merged.

:func:`merge_tensor` merges one tensor from its inputs. A method that declares
``Capabilities.elementwise`` runs on flat chunks of :data:`CHUNK` elements (its
temporaries stay a few megabytes even for an embedding matrix). A method that
declares ``Capabilities.topk_cuts`` (per-tensor TIES) first gets each model's
exact top-k :class:`~modularevo.merging.sparsify.Cut` of ``|θ_t - θ_0|`` for the
whole tensor (:func:`~modularevo.merging.thresholds.topk_cut`), then runs on
chunks with those cuts: the result equals the unchunked trim entry for entry,
ties at the cut included (kept in flat order, lower index first). Tensors are torch
tensors or numpy arrays, as the plan's backend (:mod:`.backend`) reads them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modularevo.io.reader import ModelReader
from modularevo.merging._checks import check_merged_finite
from modularevo.merging.backend import TorchBackend
from modularevo.merging.plan_types import CHUNK, MergePlan, TensorTask
from modularevo.merging.sparsify import keep_count
from modularevo.merging.spec import call_method, method_generators
from modularevo.merging.thresholds import CHUNK as CUT_CHUNK
from modularevo.merging.thresholds import topk_cuts
from modularevo.merging.tokenizer import align_rows
from modularevo.utils.heap import release_free_heap

if TYPE_CHECKING:
    from torch import Tensor


# (task, [(tensor or None, label)]) with the base first when the method takes one.
Inputs = list[tuple[Any, str]]


def check_finite(t: Tensor, name: str, where: str) -> None:
    """Raise if the torch tensor ``t`` holds NaN or Inf (one fast reduction).

    Raises:
        InputError: naming the tensor, the model and how many bad values it holds.
    """
    TorchBackend().check_finite(t, name, where)


def task_readers(plan: MergePlan, task: TensorTask) -> list[tuple[ModelReader | None, str, str]]:
    """What to read for ``task``: (reader or ``None`` for "use the base", tensor name,
    label) triples.

    For ``merge`` the base comes first (when the method takes one), then each input
    model taking part (:meth:`~modularevo.merging.plan_types.TensorTask.inputs`); a model
    lacking the tensor (``missing_tensors: base``) gets ``None``. ``copy`` reads the
    reference model (in a ``slices:`` merge, the slice's first source); ``alias`` reads
    nothing. Names differ from ``task.name`` only in ``slices:`` merges.
    """
    if task.action == "copy":
        if task.sources:
            i = next(i for i, src in enumerate(task.sources) if src is not None)
            return [(plan.models[i], task.source(i), plan.entries[i].model)]
        return [(plan.reference, task.name, str(plan.reference.path))]
    if task.action != "merge":
        return []
    out: list[tuple[ModelReader | None, str, str]] = []
    if plan.base is not None:
        out.append((plan.base, task.base_source or task.name, plan.config.base_model or ""))
    for i in task.inputs(len(plan.entries), plan.base is not None):
        reader = plan.models[i] if task.present[i] else None
        out.append((reader, task.source(i), plan.entries[i].model))
    return out


class Prefetcher:
    """Reads (and NaN-checks) the inputs of upcoming tasks in a thread pool.

    Args:
        plan: the merge plan.
        tasks: the tasks in execution order.
        threads: reader threads.
        ahead_bytes: input bytes that may be read ahead of the task being merged.
    """

    def __init__(
        self, plan: MergePlan, tasks: Sequence[TensorTask], *, threads: int = 2,
        ahead_bytes: int = 64 << 20,
    ) -> None:  # fmt: skip
        self.plan = plan
        self.tasks = list(tasks)
        self.ahead_bytes = ahead_bytes
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="merge-read")
        self._queue: deque[tuple[TensorTask, list[Future[Any] | None], int]] = deque()
        self._next = 0
        self._held = 0

    def _bytes(self, task: TensorTask) -> int:
        return sum(r.tensors[n].end - r.tensors[n].start
                   for r, n, _ in task_readers(self.plan, task) if r is not None)  # fmt: skip

    def _read(self, reader: ModelReader, name: str, label: str) -> Any:
        backend = self.plan.backend
        t = backend.read(reader, name)
        if self.plan.config.check_finite:
            backend.check_finite(t, name, label)
        return t

    def _top_up(self) -> None:
        while self._next < len(self.tasks):
            task = self.tasks[self._next]
            size = self._bytes(task)
            if self._held and self._held + size > self.ahead_bytes:
                return
            if size > self.ahead_bytes:
                release_free_heap()  # before a big read: keep the peak at what is in use
            futs = [
                self._pool.submit(self._read, r, n, label) if r is not None else None
                for r, n, label in task_readers(self.plan, task)
            ]
            self._queue.append((task, futs, size))
            self._held += size
            self._next += 1

    def __iter__(self) -> Iterator[tuple[TensorTask, Inputs]]:
        """Yield each task with its inputs, in order; later reads run meanwhile."""
        for _ in range(len(self.tasks)):
            self._top_up()
            task, futs, size = self._queue.popleft()
            self._top_up()
            labels = [label for _, _, label in task_readers(self.plan, task)]
            inputs = [(f.result() if f is not None else None, lb)
                      for f, lb in zip(futs, labels, strict=True)]  # fmt: skip
            yield task, inputs
            del inputs, futs  # the futures hold the tensors too
            self._held -= size

    def close(self) -> None:
        """Stop the reader threads (pending reads are cancelled)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def merge_tensor(
    plan: MergePlan,
    task: TensorTask,
    inputs: Inputs,
    thresholds: list[float] | None,
    pool: ThreadPoolExecutor | None = None,
) -> Any:
    """Merge one tensor from its read ``inputs``; returns it in the task's output dtype.

    With ``check_finite`` the float32 result is checked (chunk by chunk, beside the
    compute) to be finite in the output dtype; a tensor that is not is counted and
    refused (:func:`~modularevo.merging._checks.check_merged_finite`).

    Args:
        plan: the merge plan (its backend says whether these are tensors or arrays).
        task: the tensor to merge.
        inputs: its inputs, as :class:`Prefetcher` yields them.
        thresholds: each model's global |τ| threshold (``trim_scope: global``).
        pool: threads that share the chunks of a chunked merge (see
            :meth:`~modularevo.merging.backend.Backend.compute_threads`).
    """
    has_base = plan.base is not None
    idx = task.inputs(len(plan.entries), has_base)
    if plan.aligns(task.name):
        inputs = _aligned(plan, inputs, idx)
    base = inputs[0][0] if has_base else None
    models = [t if t is not None else base for t, _ in inputs[1 if has_base else 0 :]]
    params = plan.params_for(task.name, idx)
    extra = _extra(plan, task, idx, params, thresholds)
    mode = plan.chunk_mode(params) if task.numel > CHUNK else None
    if mode is not None:
        tensors = [t for t in models if t is not None]
        out, finite = _merge_chunked(plan, task, (tensors, base), extra, mode, pool)
    else:
        f32 = plan.backend.to_float32
        base32 = f32(base) if base is not None else None
        merged = call_method(plan.method, [f32(t) for t in models if t is not None], base32,
                             **extra)  # fmt: skip
        if tuple(merged.shape) != task.shape:
            raise RuntimeError(
                f"merge method returned shape {list(merged.shape)} for {task.name!r} "
                f"(expected {list(task.shape)}); this is a bug in the method"
            )
        finite = plan.backend.stays_finite(merged, task.out_code)
        out = plan.backend.cast(merged, task.out_code)
    if plan.config.check_finite and not finite:
        check_merged_finite(out, task.name, params)  # counts and raises
    return out


def _aligned(plan: MergePlan, inputs: Inputs, idx: list[int]) -> Inputs:
    """The inputs with their rows re-indexed to the output vocabulary (tokenizer surgery)."""
    vocab = plan.vocab
    assert vocab is not None
    off = 1 if plan.base is not None else 0
    full: list[Any] = [None] * len(vocab.models)
    if off:
        full[0] = inputs[0][0]
    for pos, i in enumerate(idx):
        full[off + i] = inputs[off + pos][0]
    new = align_rows(full, vocab)
    picked = ([0] if off else []) + [off + i for i in idx]
    return [(new[j], label) for j, (_, label) in zip(picked, inputs, strict=True)]


def _extra(
    plan: MergePlan,
    task: TensorTask,
    idx: list[int],
    params: dict[str, Any],
    thresholds: list[float] | None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`call_method` for ``task`` (inputs ``idx``)."""
    method = plan.method
    return {
        "params": params,
        "generators": method_generators(method, plan.config.seed, task.name, idx),
        "masks": (
            [plan.masks[i].mask(task.name) if plan.masks[i] else None for i in idx]
            if method.uses_masks
            else None
        ),
        "thresholds": [thresholds[i] for i in idx] if thresholds else None,
    }


def _merge_chunked(
    plan: MergePlan,
    task: TensorTask,
    inputs: tuple[list[Any], Any],
    extra: dict[str, Any],
    mode: str,
    pool: ThreadPoolExecutor | None,
) -> tuple[Any, bool]:
    """The merged tensor and whether every chunk stayed finite in its output dtype."""
    backend = plan.backend
    flats = [t.reshape(-1) for t in inputs[0]]
    flat_base = inputs[1].reshape(-1) if inputs[1] is not None else None
    run = pool.map if pool is not None else map
    cuts = None
    if mode == "cuts":
        assert flat_base is not None
        dens = extra["params"]["density"]
        ks = [keep_count(d, task.numel) for d in dens]
        # its own, larger chunks (per-chunk counts stay few), but at least 8 per tensor
        # so that both threads have work on a 4M-entry projection too
        span = min(CUT_CHUNK, max(1 << 20, -(-task.numel // 8)))
        cuts = topk_cuts(flats, flat_base, ks, span, run)
    masks = extra.get("masks")
    out = _output_buffer(backend, task, inputs[0], inputs[1])
    flat_out = out.reshape(-1)  # a view: the buffer is contiguous

    def one(a: int) -> bool:
        b = min(a + CHUNK, task.numel)
        kw = dict(extra)
        if masks is not None:
            kw["masks"] = [m.reshape(-1)[a:b] if m is not None else None for m in masks]
        if cuts is not None:
            kw["thresholds"] = [c.shifted(a) for c in cuts]
        part = None if flat_base is None else backend.to_float32(flat_base[a:b])
        merged = call_method(plan.method, [backend.to_float32(f[a:b]) for f in flats], part, **kw)
        flat_out[a:b] = backend.cast(merged, task.out_code)
        return backend.stays_finite(merged, task.out_code)  # in cache, beside the compute

    finite = all(list(run(one, range(0, task.numel, CHUNK))))
    return out, finite


def _output_buffer(backend: Any, task: TensorTask, tensors: list[Any], base: Any) -> Any:
    """Where the chunks of the merged tensor go: the first model's input tensor when it
    can hold the output and nothing else shares it, else a new buffer.

    Each chunk reads its slice of every input before writing its slice of the output, so
    the executor, which drops the inputs after the merge (the base is kept: the unchanged-
    merge check compares it), may overwrite one: this saves a buffer the size of the
    tensor and the page faults of touching it (at 1.4B parameters, 2.8 GB in all).
    """
    if tensors and tensors[0] is not base:
        first, others = tensors[0], [base, *tensors[1:]]
        if backend.can_overwrite(first, others, task.shape, task.out_code):
            return first
    return backend.empty(task.shape, task.out_code)
