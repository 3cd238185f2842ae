"""The paper's unstructured path: zero the weights outside a module, time it in DeepSparse.

DeepSparse (Neural Magic, deprecated; cp311 wheel; restrictive licence) is an optional
benchmark engine only, never a dependency. Two steps, two environments:

1. export (the project's venv): the dense classifier and a copy with every weight outside
   the (unstructured) module set to zero, both to ONNX with static shapes::

       .venv/bin/python benchmarks/bench_deploy_deepsparse.py export \\
           --model runs/bench_deploy/lang-id-dense --module MODULE.safetensors \\
           --out runs/bench_deepsparse

2. time (a venv holding only deepsparse==1.8.0; it imports neither torch nor modularevo)::

       /tmp/ds-venv/bin/python benchmarks/bench_deploy_deepsparse.py time \\
           --out runs/bench_deepsparse --batch 1 8 --repeats 30

   dense and zeroed graphs are compiled by the same engine and timed interleaved; prints the
   median and IQR per graph and batch, the ratio, and writes ``deepsparse.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def export(args: argparse.Namespace) -> None:
    import copy

    from modularevo.deploy.onnx_export import export_onnx
    from modularevo.deploy.runner import load_any_model
    from modularevo.modules.io import load_module

    dense, _ = load_any_model(args.model, "classifier", None)
    mask = load_module(args.module, params=dense.named_parameters(), allow_modified=True)
    zeroed = copy.deepcopy(dense)
    mask.apply_(dict(zeroed.named_parameters()))
    kept = sum(int(m.sum()) for m in mask.masks.values())
    total = sum(m.numel() for m in mask.masks.values())
    print(f"module keeps {kept / total:.1%} of the {total:,} masked weights")
    for name, model in (("dense", dense), ("zeroed", zeroed)):
        export_onnx(model, args.out / name, overwrite=True, dynamo=False)
    info = {"model": args.model, "module": str(args.module), "kept_fraction": kept / total}
    (args.out / "export.json").write_text(json.dumps(info, indent=2))


def _time(args: argparse.Namespace) -> None:
    import numpy as np
    from deepsparse import Engine

    rng = np.random.default_rng(0)
    result: dict = {"repeats": args.repeats, "seq": args.seq}
    for b in args.batch:
        ids = rng.integers(1000, 2000, size=(b, args.seq), dtype=np.int64)
        inputs = [ids, np.ones_like(ids)]
        engines = {
            n: Engine(model=str(args.out / n / "model.onnx"), batch_size=b,
                      input_shapes=[[b, args.seq], [b, args.seq]])
            for n in ("dense", "zeroed")
        }  # fmt: skip
        times: dict[str, list[float]] = {n: [] for n in engines}
        for _ in range(3):
            for e in engines.values():
                e.run(inputs)
        for _ in range(args.repeats):
            for n, e in engines.items():
                t0 = time.perf_counter()
                e.run(inputs)
                times[n].append(1000 * (time.perf_counter() - t0))
        point = {}
        for n, ts in times.items():
            q = statistics.quantiles(ts, n=4)
            point[n] = {"median_ms": statistics.median(ts), "iqr_ms": q[2] - q[0]}
        ratio = point["dense"]["median_ms"] / point["zeroed"]["median_ms"]
        print(
            f"batch {b}: dense {point['dense']['median_ms']:.1f} ms, zeroed "
            f"{point['zeroed']['median_ms']:.1f} ms -> {ratio:.2f}x"
        )
        result[f"batch{b}"] = point
    (args.out / "deepsparse.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["export", "time"])
    ap.add_argument("--model")
    ap.add_argument("--module", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_deepsparse"))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    if args.step == "export":
        export(args)
    else:
        _time(args)


if __name__ == "__main__":
    main()
