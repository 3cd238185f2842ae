"""Benchmark: one fine-tune on all cores against one fine-tune per core, side by side.

Why ``jobs: 2`` in the quickstart: on a small CPU, two MiniLM fine-tunes with one
thread each may train faster together than one fine-tune with every thread. This
script times full training steps (forward, backward, AdamW) of the embedded MiniLM
classifier on random tokens, first in one process with ``--threads`` threads, then in
``--threads`` processes with one thread each, started together, and prints both
throughputs and their ratio, measured in one run. Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_parallel_jobs.py --steps 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

_CHILD = r"""
import sys, time, torch
threads, steps, length = (int(x) for x in sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
from modularevo.models.load import load_model
model, _ = load_model("minilm", "classifier", num_labels=10)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randint(1000, 20000, (16, length)); y = torch.randint(0, 10, (16,))
def step():
    model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss.backward()
    opt.step(); opt.zero_grad()
step()  # warm-up, not timed
t = time.perf_counter()
for _ in range(steps):
    step()
print((time.perf_counter() - t) / steps, flush=True)
"""


def _start(threads: int, steps: int, length: int) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-c", _CHILD, str(threads), str(steps), str(length)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def _seconds(proc: subprocess.Popen[str]) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a timing child failed (exit {proc.returncode})")
    return float(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Time both layouts and print steps/s of each and the ratio."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--length", type=int, default=64, help="tokens per example (batch 16)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    one = _seconds(_start(args.threads, args.steps, args.length))
    procs = [_start(1, args.steps, args.length) for _ in range(args.threads)]
    each = [_seconds(p) for p in procs]
    together = sum(1 / s for s in each)
    print(f"batch 16 x {args.length} tokens, {args.steps} timed steps, MiniLM classifier")
    print(f"one process, {args.threads} threads: {one:.3f} s/step = {1 / one:.2f} steps/s")
    per = ", ".join(f"{s:.3f}" for s in each)
    print(f"{args.threads} processes, 1 thread each: {per} s/step, {together:.2f} steps/s in all")
    print(f"ratio (processes / one process): {together * one:.2f}x")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
