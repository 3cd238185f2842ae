"""The timing pass of ``bench_deploy.py``: dense and modules in PyTorch and ONNX Runtime.

Every variant of one task (the dense model and each module folder; with ``--onnx`` their
ONNX Runtime fp32 graphs, with ``--int8`` also the int8 dynamic ones) is timed in one
interleaved loop at batch 1 and 8, so load from other processes hits all of them alike;
each runtime's dense model is the control of its modules.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import Tensor

from modularevo.cost.meter import cpu_name, interleaved_latency


class _OrtModel:
    """Callable like a model (``**inputs``): one ONNX Runtime forward."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        self.session.run(
            ["logits"],
            {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()},
        )


def timed_variants(
    task: str,
    te: tuple[Tensor, Tensor, Tensor],
    folders: dict[str, Path],
    graphs: Path,
    args: argparse.Namespace,
) -> dict:
    """Median and IQR latency of every variant of ``folders`` (``dense`` and module names)
    on the first 1 and 8 test examples; ONNX graphs exported once under ``graphs``."""
    from modularevo.deploy.runner import load_any_model

    torch.set_num_threads(args.threads)
    variants: dict[str, object] = {}
    checks = {}
    for kind, folder in folders.items():
        model, _ = load_any_model(str(folder), "classifier", None)
        variants[f"torch/{kind}"] = model.eval()
        if args.onnx:
            from modularevo.deploy.onnx_export import INT8_FILE, ONNX_FILE, export_onnx, ort_session

            graph = graphs / f"{task}-{kind}"
            if not (graph / "onnx_export.json").is_file():
                export_onnx(model, graph, quantize=args.int8, overwrite=True)
            checks[kind] = json.loads((graph / "onnx_export.json").read_text())
            variants[f"ort/{kind}"] = _OrtModel(
                ort_session(graph / ONNX_FILE, threads=args.threads)
            )
            if args.int8:
                variants[f"ort-int8/{kind}"] = _OrtModel(
                    ort_session(graph / INT8_FILE, threads=args.threads)
                )
    result: dict = {
        "task": task,
        "threads": args.threads,
        "seq_len": args.max_len,
        "repeats": args.repeats,
        "cpu": cpu_name(),
        "checks": checks,
    }
    for b in (1, 8):
        inputs = {"input_ids": te[0][:b], "attention_mask": te[1][:b]}
        print(f"[{task}] timing batch {b}: {len(variants)} variants", flush=True)
        times = interleaved_latency(variants, inputs, repeats=args.repeats, warmup=3)  # type: ignore[arg-type]
        point = {}
        for name, ts in times.items():
            ms = sorted(1000 * x for x in ts)
            q = statistics.quantiles(ms, n=4)
            point[name] = {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0], "ms": ms}
        result[f"batch{b}"] = point
    return result
