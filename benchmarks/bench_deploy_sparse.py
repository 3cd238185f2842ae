"""The paper's deployment path: an unstructured module, zeros held, timed in DeepSparse.

Per task and target sparsity (METHODS §1.5: the paper zeroes every weight outside an
unstructured module of about 75% sparsity and runs it in Neural Magic's DeepSparse):

1. load the dense MiniLM classifier fine-tuned to its validation plateau
   (``--finetunes``/<task>/model) and the task's splits (max length 64);
2. make an unstructured module of the encoder's Linear weights (q, k, v, attention output,
   FFN up and down of every block; embeddings, pooler and head stay dense): gradual
   magnitude pruning, per tensor, on the cubic schedule of Zhu & Gupta 2017
   (arXiv:1710.01878) over the first ``--ramp`` of ``--steps`` recovery steps, then the mask
   is fixed. The weights outside the mask are exactly zero in every forward (re-zeroed after
   every optimizer step, their gradients zeroed before it); with ``--distill`` (default) the
   loss adds logit KL and hidden-state MSE against the dense teacher
   (``modularevo.training.distill.Distiller``);
3. test-split accuracy (full split) of dense and sparse, each with its Wilson 95% interval,
   and the paired bootstrap 95% interval of the difference (sparse − dense) plus McNemar;
4. both exported to ONNX (TorchScript exporter, logits checked against PyTorch), then timed
   at batch 1 and 8, sequence 64, single thread, in DeepSparse (dense control in the same
   engine) and in ONNX Runtime (the second control: it does not exploit unstructured zeros),
   all four graphs interleaved in one loop (the starting graph rotates every round) after
   warm-up; median, IQR, and the speed-up (ratio of medians) with a bootstrap 95% interval
   over the paired rounds;
5. one JSON per finished (task, sparsity) (a killed run redoes only what is unfinished),
   ``results.md`` (tables) and ``plot.png`` (accuracy difference vs DeepSparse speed-up).

DeepSparse 1.8.0 (deprecated, restrictive licence) would downgrade numpy and onnx in the
project's venv, so it lives in its own venv and only step 4 runs there (in that mode neither
this file nor the siblings it imports import torch)::

    python3.11 -m venv /tmp/ds-venv && /tmp/ds-venv/bin/pip install deepsparse==1.8.0

Run (project venv; the timing subprocess uses ``--engine-python``)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deploy_sparse.py \\
        --tasks math-type lang-id --sparsity 0.75 --steps 300 \\
        --engine-python /tmp/ds-venv/bin/python --out runs/bench_deploy_sparse

Without deepsparse in ``--engine-python`` the timing records why and times ONNX Runtime only.
``--retime`` times finished tasks again from their saved ONNX files (no training) and keeps
the earlier timings in ``timing_earlier``.

This file holds one task's flow and the command line; the steps live beside it:
``sparse_module.py`` (step 2), ``sparse_accuracy.py`` (step 3), ``sparse_timing.py`` (step 4's
timing, run by ``--engine-python`` through ``--time-dir``) and ``sparse_report.py`` (step 5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sparse_accuracy import accuracy_stats, correctness
from sparse_module import encoder_linear_weights, measured_sparsity, train_sparse
from sparse_report import plot, sparsity_tag, table
from sparse_timing import SEQ, time_graphs

if TYPE_CHECKING:  # torch is absent from the DeepSparse venv that runs ``time``
    from torch import Tensor, nn


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def encode(tok: Any, ds: Any, max_len: int = SEQ) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels) padded to ``max_len``."""
    import torch

    enc = tok(list(ds["text"]), truncation=True, max_length=max_len, padding="max_length",
              return_tensors="pt")  # fmt: skip
    return enc["input_ids"], enc["attention_mask"], torch.tensor(ds["label"])


def _load_task(task: str, args: argparse.Namespace) -> tuple[nn.Module, Any, dict[str, Any]]:
    from modularevo.data import load_dataset
    from modularevo.models.load import load_model

    model, tok = load_model(str(args.finetunes / task / "model"), "classifier")
    dsd = load_dataset(task)
    if args.max_train:
        dsd["train"] = dsd["train"].select(range(min(args.max_train, len(dsd["train"]))))
    if args.max_test:
        dsd["test"] = dsd["test"].select(range(min(args.max_test, len(dsd["test"]))))
    return model, tok, {s: encode(tok, dsd[s], SEQ) for s in ("train", "test")}


def _export(model: nn.Module, path: Path) -> float:
    """ONNX (TorchScript exporter, opset 14) at ``path``; returns the checked logit gap."""
    import shutil

    from modularevo.deploy.onnx_export import ONNX_FILE, export_onnx

    folder = path.with_suffix("")
    export_onnx(model, folder, dynamo=False, opset=14, overwrite=True)
    gap = json.loads((folder / "onnx_export.json").read_text())["max_abs_logit_diff"]
    (folder / ONNX_FILE).replace(path)
    shutil.rmtree(folder)
    return float(gap)


def train_task(task: str, sparsity: float, args: argparse.Namespace, tdir: Path) -> dict:
    """Steps 1-4 up to the ONNX files: trains, scores, exports; returns the record."""
    import copy

    import numpy as np
    import torch

    from modularevo.training.distill import DistillConfig

    torch.manual_seed(args.seed)
    dense, _, data = _load_task(task, args)
    load_start = os.getloadavg()
    t0 = time.time()
    c_dense = correctness(dense, data["test"])
    sparse = copy.deepcopy(dense)
    dcfg = DistillConfig.model_validate(
        {"temperature": args.temperature, "hidden_weight": args.hidden_weight}
    )
    print(f"[{task} {sparsity_tag(sparsity)}] {args.steps} steps to sparsity {sparsity}"
          f"{' with distillation' if args.distill else ''}", flush=True)  # fmt: skip
    masks, log = train_sparse(sparse, data["train"], steps=args.steps, sparsity=sparsity,
                              ramp=args.ramp, prune_every=args.prune_every, lr=args.lr,
                              batch=args.batch, seed=args.seed,
                              teacher=dense if args.distill else None, distill=dcfg)  # fmt: skip
    train_s = time.time() - t0
    weights = encoder_linear_weights(sparse)
    c_sparse = correctness(sparse, data["test"])
    stats = accuracy_stats(c_dense, c_sparse)
    dense_param = dict(dense.named_parameters())
    kept = sum(int(m.sum()) for m in masks.values())
    total_params = sum(p.numel() for p in sparse.parameters())
    tdir.mkdir(parents=True, exist_ok=True)
    gaps = {
        "dense": _export(dense, tdir / "dense.onnx"),
        "sparse": _export(sparse, tdir / "sparse.onnx"),
    }
    ids, am, _ = data["test"]
    np.savez(tdir / "inputs.npz", input_ids=ids[:8].numpy(), attention_mask=am[:8].numpy())
    return {
        "task": task, "sparsity_target": sparsity, "steps": args.steps,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "accuracy": stats, "correct": {"dense": c_dense, "sparse": c_sparse},
        "module": {"masked_weights": sum(m.numel() for m in masks.values()), "kept": kept,
                   "encoder_linear_sparsity": measured_sparsity(weights),
                   "model_sparsity": sum(int((p == 0).sum()) for p in sparse.parameters())
                   / total_params,
                   "dense_zero_fraction": measured_sparsity({k: dense_param[k] for k in weights})},
        "onnx_logit_gap_vs_torch": gaps, "train_log": log, "train_eval_s": round(train_s, 1),
        "load_train": [load_start, os.getloadavg()], "host": platform.node(),
    }  # fmt: skip


def timing_for(tdir: Path, args: argparse.Namespace) -> dict:
    """Step 4's timing in ``--engine-python`` (a subprocess: DeepSparse has its own venv)."""
    cmd = [args.engine_python, str(Path(__file__).resolve()), "--time-dir", str(tdir),
           "--batches", *map(str, args.batches), "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads((tdir / "timing.json").read_text())


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    ds = Path("/tmp/ds-venv/bin/python")
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["math-type", "lang-id"])
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.75])
    ap.add_argument("--finetunes", type=Path, default=Path("runs/bench_merge_quality/finetunes"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench_deploy_sparse"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ramp", type=float, default=0.5, help="fraction of steps to reach sparsity")
    ap.add_argument("--prune-every", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--hidden-weight", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=0, help="0: the whole train split")
    ap.add_argument("--max-test", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--threads", type=int, default=1, help="torch, ORT and DeepSparse threads")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--engine-python", default=str(ds) if ds.is_file() else sys.executable,
                    help="python that runs the timing (a venv with deepsparse==1.8.0)")  # fmt: skip
    ap.add_argument("--retime", action="store_true", help="time finished tasks again")
    ap.add_argument("--time-dir", type=Path, help=argparse.SUPPRESS)  # the timing subprocess
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--time-dir``, only the timing of one task folder)."""
    args = _args(argv)
    if args.time_dir is not None:
        res = time_graphs(args.time_dir, batches=args.batches, repeats=args.repeats,
                          warmup=args.warmup, threads=args.threads)  # fmt: skip
        _write_json(args.time_dir / "timing.json", res)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for task in args.tasks:
        for s in args.sparsity:
            done = args.out / f"{task}-{sparsity_tag(s)}.json"
            tdir = args.out / task / sparsity_tag(s)
            if not done.is_file():
                partial = tdir / "record.json"
                if not partial.is_file():
                    _write_json(partial, train_task(task, s, args, tdir))
                rec = json.loads(partial.read_text())
                rec["timing"] = timing_for(tdir, args)
                _write_json(done, rec)
            elif args.retime:  # time again (e.g. on a quieter machine), keep the earlier runs
                rec = json.loads(done.read_text())
                rec.setdefault("timing_earlier", []).append(rec["timing"])
                rec["timing"] = timing_for(tdir, args)
                _write_json(done, rec)
            records.append(json.loads(done.read_text()))
    md = table(records, args.batches)
    (args.out / "results.md").write_text(md)
    plot(records, args.out / "plot.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
