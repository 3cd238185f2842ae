"""Step 4 of ``bench_deploy_sparse.py``: a task's ONNX graphs timed in DeepSparse and ONNX Runtime.

The dense and the sparse graph of a task are timed at batch 1 and 8, sequence 64, single
thread, in DeepSparse (dense control in the same engine) and in ONNX Runtime (the second
control: it does not exploit unstructured zeros), all four graphs interleaved in one loop (the
starting graph rotates every round) after warm-up; median, IQR, and the speed-up (ratio of
medians) with a bootstrap 95% interval over the paired rounds. Without deepsparse the timing
records why and times ONNX Runtime only.

This file imports no torch and nothing of ``modularevo``: DeepSparse 1.8.0 lives in its own
venv (see ``bench_deploy_sparse.py``), whose python runs ``bench_deploy_sparse.py --time-dir``,
which calls :func:`time_graphs` here.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ENGINES = ("deepsparse", "ort")
KINDS = ("dense", "sparse")
SEQ = 64


def _summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [min(ms), 0.0, max(ms)]
    return {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0], "n": len(ms)}


def speedup(dense_ms: Sequence[float], sparse_ms: Sequence[float], *, samples: int = 2000,
            seed: int = 0) -> dict[str, float]:  # fmt: skip
    """median(dense) / median(sparse) and its percentile 95% interval from a bootstrap over
    the paired rounds (one dense and one sparse time per round, taken side by side)."""
    import numpy as np

    d, s = np.asarray(dense_ms, float), np.asarray(sparse_ms, float)
    if d.shape != s.shape:
        raise ValueError(f"paired rounds differ in number: {d.shape} vs {s.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(samples, len(d)))
    draws = np.median(d[idx], axis=1) / np.median(s[idx], axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"ratio": float(np.median(d) / np.median(s)), "lo": float(lo), "hi": float(hi)}


def _runners(
    graphs: Mapping[str, str], batch: int, threads: int
) -> tuple[dict[str, Callable], dict]:
    """engine/kind -> a callable running one batch (list of [input_ids, attention_mask])."""
    import onnxruntime as ort

    info: dict[str, Any] = {"onnxruntime": ort.__version__}
    runners: dict[str, Callable] = {}
    try:
        import deepsparse  # type: ignore[import-not-found]
        from deepsparse import Engine  # type: ignore[import-not-found]

        info["deepsparse"] = deepsparse.__version__
        for kind, path in graphs.items():
            eng = Engine(model=path, batch_size=batch, num_cores=threads,
                         input_shapes=[[batch, SEQ], [batch, SEQ]])  # fmt: skip
            runners[f"deepsparse/{kind}"] = eng.run
    except Exception as exc:  # ImportError, or an engine that refuses this CPU or graph
        info["deepsparse_error"] = f"{type(exc).__name__}: {exc}"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for kind, path in graphs.items():
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        runners[f"ort/{kind}"] = lambda x, s=sess: s.run(
            ["logits"], {"input_ids": x[0], "attention_mask": x[1]}
        )
    return runners, info


def time_graphs(task_dir: Path, *, batches: Sequence[int], repeats: int, warmup: int,
                threads: int) -> dict[str, Any]:  # fmt: skip
    """Time ``dense.onnx``/``sparse.onnx`` of ``task_dir`` in every available engine.

    All graphs run interleaved: each round times one forward of every graph, starting from
    a different graph each round, so load from other processes hits all alike. The inputs
    are the first rows of the test split (``inputs.npz``, padded to 64 tokens). Also checks
    that each engine reproduces ONNX Runtime's logits.
    """
    import numpy as np

    arrays = np.load(task_dir / "inputs.npz")
    graphs = {k: str(task_dir / f"{k}.onnx") for k in KINDS}
    result: dict[str, Any] = {"threads": threads, "seq": SEQ, "repeats": repeats,
                              "warmup": warmup, "load_start": os.getloadavg()}  # fmt: skip
    for b in batches:
        x = [
            arrays["input_ids"][:b].astype(np.int64),
            arrays["attention_mask"][:b].astype(np.int64),
        ]
        runners, info = _runners(graphs, b, threads)
        result["engines"] = info
        names = list(runners)
        logits = {n: np.asarray(runners[n](x)[0]) for n in names}
        gaps = {n: float(np.abs(logits[n] - logits[f"ort/{n.split('/')[1]}"]).max()) for n in names}
        for _ in range(warmup):
            for n in names:
                runners[n](x)
        ms: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeats):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                runners[n](x)
                ms[n].append(1000 * (time.perf_counter() - t0))
        point: dict[str, Any] = {n: _summary(v) | {"max_logit_gap_vs_ort": gaps[n]}
                                 for n, v in ms.items()}  # fmt: skip
        for eng in ENGINES:
            if f"{eng}/dense" in ms:
                point[f"{eng}/speedup"] = speedup(ms[f"{eng}/dense"], ms[f"{eng}/sparse"])
        point["raw_ms"] = ms
        result[f"batch{b}"] = point
        del runners
    result["load_end"] = os.getloadavg()
    return result
