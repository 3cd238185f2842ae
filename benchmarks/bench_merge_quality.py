"""Benchmark: merge quality of every merge method on one fixed set of fine-tunes.

MiniLM (embedded ``minilm``) is fine-tuned in full once per offline task (lang-id,
code-package, legal-category, math-type; early stopping on validation; each fine-tune is
a ``modularevo finetune`` output folder, cached and resumed after a kill; every
(subset, method) record is cached too, so a killed run resumes where it stopped). Then,
for every subset of 2, 3 and 4 tasks, the task backbones are merged with every method
while each task keeps its own fine-tuned head:

    average (weights 1/k, no search), task arithmetic, TIES, DARE, CABS, MagMax, TSV-M,
    Iso-C, Iso-CTS, CART, PCB, OPCM (registered: per-tensor norms), OPCM with the paper's
    whole-model norms (``opcm_whole``: :class:`~modularevo.merging.continual.ContinualOpcm`)

Hyperparameters are chosen on validation only (a seeded slice of ``--search-examples``
per task): one λ shared by the tasks (the per-task ``weight``) on ``--lambdas``, the
density on ``--densities`` (TIES, DARE, PCB; CABS n:m with K·n ≤ m), CART's rank
fraction on ``--cart-ranks`` (how the λ grid stays cheap: ``merge_quality_search.py``).
The chosen merge is then timed (wall time and peak resident memory above the start,
sampled every 5 ms) and scored on the full test splits.

Reported per number of tasks k (pooled over the subsets of size k): per-task accuracy,
the absolute average and the normalised average (accuracy ÷ the task's own fine-tune)
with 95% paired-bootstrap intervals stratified by (subset, task), and each method's
difference from task arithmetic on the same examples (interval and p-value). Controls:
the individual fine-tunes (the reference) and the untouched backbone with each task's
fine-tuned head. Writes ``results.json``, ``table.md`` and ``plot.png`` into ``--out``.

    nice -n 19 .venv/bin/python benchmarks/bench_merge_quality.py --out runs/bench_merge_quality
    # reuse full fine-tunes written by `modularevo finetune` (DIR/<task>/model or DIR/<task>):
    ... --finetunes runs/ft
    # smoke test (tiny random BERT, 3 tasks, a few steps, small splits; ~2 CPU-minutes):
    ... --quick --out /tmp/bmq

This file holds the run over subsets and methods, its cached records and the command line;
beside it, ``merge_quality_setup.py`` makes the fine-tunes and loads them,
``merge_quality_search.py`` chooses, times and scores each merge, and
``merge_quality_report.py`` pools the records into the statistics, tables and plot.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_quality_report import CONTROL, REFERENCE, TASKS, markdown, plot, summarise
from merge_quality_search import METHODS, merge_and_score, test_scores
from merge_quality_setup import Setup, ensure_finetunes, load_setup


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options a cached record depends on (a record made with others is redone)."""
    keys = ("model", "finetunes", "lambdas", "densities", "cart_ranks", "search_examples",
            "test_examples", "max_length", "seed", "lr", "head_lr", "epochs", "max_steps",
            "patience", "max_train_examples", "max_ft_eval_examples")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


class Records:
    """One JSON file per (subset, method) under ``folder``: a killed run resumes, and
    a record is reused only when it was made with the same :func:`settings`."""

    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        self.folder, self.config = folder, json.loads(json.dumps(dict(config)))

    def get(self, label: str) -> dict[str, Any] | None:
        """The cached record of ``label``, or ``None``."""
        path = self.folder / f"{label}.json"
        if not path.is_file():
            return None
        rec = json.loads(path.read_text(encoding="utf-8"))
        return rec if rec.get("settings") == self.config else None

    def put(self, label: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Write ``rec`` atomically (a temporary file, then a rename) and return it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        rec = {**rec, "settings": self.config}
        tmp = self.folder / f".{label}.json.tmp"
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        os.replace(tmp, self.folder / f"{label}.json")
        return rec


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune (or reuse), merge every subset with every method, score and report.

    With ``--report-only`` nothing is trained or merged: the report is made from the
    cached records alone (a subset without its controls is left out, and a method is
    reported for a number of tasks only when every subset of that size has its record).
    """
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = list(args.tasks)
    setup = None
    if not args.report_only:
        setup = load_setup(args, ensure_finetunes(args, tasks))
    labels = ["average", *args.methods]
    by_k: dict[str, Any] = {}
    for k in args.ks:
        subsets = list(itertools.combinations(tasks, k))
        if args.first_subset_only:
            subsets = subsets[:1]
        runs = []
        for subset in subsets:
            cache = Records(Path(args.out) / "records" / "+".join(subset), settings(args))
            r = subset_record(setup, subset, labels, cache, args)
            if r is not None:
                runs.append(r)
        if not runs:
            continue
        present = [m for m in labels if all(m in r["test"] for r in runs)]
        by_k[str(k)] = summarise(runs, [REFERENCE, CONTROL, *present])
        by_k[str(k)]["runs"] = [{k2: v for k2, v in r.items() if k2 != "test"} for r in runs]
    return {"command": args.command, "model": args.model, "tasks": tasks,
            "finetunes": setup.finetunes if setup is not None else {},
            "lambdas": list(args.lambdas), "densities": list(args.densities),
            "by_k": by_k}  # fmt: skip


def subset_record(
    setup: Setup | None,
    subset: Sequence[str],
    labels: Sequence[str],
    cache: Records,
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """The controls and every method on one subset, cached records reused.

    Without ``setup`` (``--report-only``) only cached records are used: a method without
    one is left out, and the subset is ``None`` when a control has none.
    """

    def fetch(label: str) -> dict[str, Any] | None:
        rec = cache.get(label)
        if rec is not None or setup is None:
            return rec
        if label in (REFERENCE, CONTROL):
            shared, base = setup.shared, setup.base
            states = (lambda t: shared[t]) if label == REFERENCE else (lambda _t: base)
            return cache.put(label, {"test": test_scores(setup, subset, states)})
        return cache.put(label, merge_and_score(setup, subset, label, args))

    if setup is not None:
        print(f"merging {'+'.join(subset)} ...", flush=True)
    r: dict[str, Any] = {"tasks": list(subset), "chosen": {}, "cost": {}, "test": {}}
    for label in (REFERENCE, CONTROL, *labels):
        rec = fetch(label)
        if rec is None:
            if label in (REFERENCE, CONTROL):
                return None
            continue
        r["test"][label] = rec["test"]
        if label in (REFERENCE, CONTROL):
            continue
        r["chosen"][label], r["cost"][label] = rec["chosen"], rec["cost"]
        if setup is not None:
            print(f"  {label}: {rec['chosen']} test "
                  f"{np.mean([v['accuracy'] for v in rec['test'].values()]):.3f}",
                  flush=True)  # fmt: skip
    return r


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks everything for a smoke test)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", default="runs/bench_merge_quality")
    ap.add_argument("--finetunes", default=None, help="reuse DIR/<task>/model fine-tunes")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--ks", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--lambdas", nargs="+", type=float,
                    default=[0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0])  # fmt: skip
    ap.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.2, 0.4])
    ap.add_argument("--cart-ranks", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    ap.add_argument("--search-examples", type=int, default=400, help="validation slice per task")
    ap.add_argument("--test-examples", type=int, default=None, help="default: full test splits")
    ap.add_argument("--first-subset-only", action="store_true")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-train-examples", type=int, default=None)
    ap.add_argument("--max-ft-eval-examples", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny-bert, tiny splits")
    ap.add_argument("--report-only", action="store_true",
                    help="report the cached records only: no training, no merging")  # fmt: skip
    args = ap.parse_args(argv)
    args.command = "bench_merge_quality.py " + " ".join(argv if argv is not None else [])
    if args.quick:
        args.model = "tiny-bert" if args.model == "minilm" else args.model
        args.tasks = args.tasks[:3] if args.tasks == list(TASKS) else args.tasks
        args.ks = [k for k in args.ks if k <= len(args.tasks)]
        args.lambdas, args.densities, args.cart_ranks = [0.5, 1.0], [0.2, 0.4], [0.1]
        args.search_examples, args.test_examples = 24, 32
        args.max_steps, args.eval_every, args.patience = 6, 3, 2
        args.lr, args.head_lr = 1e-3, 1e-2
        args.max_train_examples, args.max_ft_eval_examples = 32, 16
        args.first_subset_only = True
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write results.json, table.md and plot.png."""
    import sys

    args = parse(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out / "table.md").write_text(markdown(result), encoding="utf-8")
    plot(result, out / "plot.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
