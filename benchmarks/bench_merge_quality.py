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
fraction on ``--cart-ranks``. Every method except PCB is homogeneous in λ (scaling every
τ_t by λ scales the merged task vector by λ), so its merged task vector is computed once
per (density, rank) and the λ grid costs only evaluations; PCB is merged at every λ.
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
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modularevo.evaluation.stats import bootstrap_averages, interval, paired_difference
from modularevo.evolution.evaluate import TaskData, TaskEvaluator, prepare_task
from modularevo.evolution.search import search_merge
from modularevo.evolution.strategies import get_strategy
from modularevo.merging.continual import ContinualOpcm
from modularevo.merging.in_memory import merge_state_dicts
from modularevo.training.strategies import head_prefixes, is_head

TASKS = ("lang-id", "code-package", "legal-category", "math-type")
REFERENCE, CONTROL = "finetuned", "base_backbone"
# method label -> evolution strategy (its merge method and density mapping)
METHODS = {
    "task_arithmetic": "ft_task_arithmetic",
    "ties": "ft_ties",
    "dare": "ft_dare",
    "cabs": "ft_cabs",
    "magmax": "ft_magmax",
    "tsv_m": "ft_tsv_m",
    "iso_c": "ft_iso_c",
    "iso_cts": "ft_iso_cts",
    "cart": "ft_cart",
    "pcb": "ft_pcb",
    "opcm": "ft_opcm",
    "opcm_whole": "ft_opcm",  # the paper's whole-model norms (ContinualOpcm), one at a time
}
NOT_HOMOGENEOUS = {"pcb"}  # tanh(τ ⊙ Σ τ): the merge changes shape with λ

State = dict[str, torch.Tensor]


@dataclass
class Setup:
    """Everything the merges need: base backbone, fine-tuned backbones and heads, data."""

    base: State
    shared: dict[str, State]
    heads: dict[str, State]
    evaluator: TaskEvaluator
    data: dict[str, TaskData]
    finetunes: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ fine-tunes


def finetune_folder(task: str, out: Path, reuse: Path | None) -> Path | None:
    """The model folder of ``task``'s full fine-tune if it is finished, else ``None``."""
    for cand in ([reuse / task / "model", reuse / task] if reuse else []) + [
        out / "finetunes" / task / "model"
    ]:
        if (cand / "config.json").is_file():
            return cand
    return None


def ensure_finetunes(args: argparse.Namespace, tasks: Sequence[str]) -> dict[str, Path]:
    """Fine-tune (or reuse) one full fine-tune per task; a killed run resumes."""
    from modularevo.training.finetune import finetune
    from modularevo.training.finetune_config import FinetuneConfig

    out = Path(args.out)
    folders: dict[str, Path] = {}
    for task in tasks:
        done = finetune_folder(task, out, Path(args.finetunes) if args.finetunes else None)
        if done is None:
            print(f"fine-tuning {args.model} on {task} ...", flush=True)
            cfg = FinetuneConfig.model_validate({
                "model": args.model, "task": task, "strategy": "full", "lr": args.lr,
                "head_lr": args.head_lr, "batch_size": 16, "max_length": args.max_length,
                "epochs": args.epochs, "max_steps": args.max_steps,
                "eval_every": args.eval_every, "patience": args.patience,
                "checkpoint_every": args.eval_every, "seed": args.seed,
                "max_train_examples": args.max_train_examples,
                "max_eval_examples": args.max_ft_eval_examples,
                "eval_at_start": not args.quick,  # quick: a few steps must move the weights
                "output_dir": str(out / "finetunes" / task), "progress": False,
            })  # fmt: skip
            finetune(cfg)
            done = out / "finetunes" / task / "model"
        folders[task] = done
    return folders


def load_setup(args: argparse.Namespace, folders: Mapping[str, Path]) -> Setup:
    """Load the fine-tuned classifiers (templates), the base backbone and the task data."""
    from modularevo.data import load_dataset
    from modularevo.models.load import load_model

    caps = {"search": args.search_examples, "validation": args.search_examples,
            "test": args.test_examples}  # fmt: skip
    shared, heads, templates, data = {}, {}, {}, {}
    base: State | None = None
    for task, folder in folders.items():
        model, tok = load_model(str(folder), "classifier")
        prefixes = head_prefixes(model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        shared[task] = {k: v for k, v in state.items() if not is_head(k, prefixes)}
        heads[task] = {k: v for k, v in state.items() if is_head(k, prefixes)}
        templates[task] = model.eval()
        data[task] = prepare_task(
            task, load_dataset(task), tok, max_length=args.max_length, caps=caps
        )
        if base is None:
            torch.manual_seed(args.seed)
            pre, _ = load_model(args.model, "classifier", num_labels=data[task].num_labels)
            base = {k: v.detach().clone() for k, v in pre.state_dict().items()
                    if not is_head(k, head_prefixes(pre))}  # fmt: skip
    assert base is not None
    missing = sorted(set(base) ^ set(next(iter(shared.values()))))
    if missing:
        raise SystemExit(f"the fine-tunes and {args.model!r} do not share tensors: {missing[:5]}")
    ev = TaskEvaluator(data, templates, batch_size=64)
    return Setup(base, shared, heads, ev, data, {t: str(f) for t, f in folders.items()})


# ------------------------------------------------------------------ merging


class PeakMemory:
    """Peak resident memory above the start of the block, sampled every 5 ms (MiB)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        """Peak minus start, MiB."""
        return (self.peak - self.start) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def merge(setup: Setup, tasks: Sequence[str], method: str, params: Mapping[str, Any]) -> State:
    """The merged backbone of ``tasks`` (registered ``method``, its parameters);
    ``opcm_whole``: :class:`ContinualOpcm`, the models folded in one at a time."""
    models = [setup.shared[t] for t in tasks]
    if method == "opcm_whole":
        merger = ContinualOpcm(setup.base, alpha=float(params.get("alpha", 0.5)))
        for sd, w in zip(models, params["weight"], strict=True):
            merger.add(sd, weight=w)
        return merger.merged()
    return merge_state_dicts(setup.base, models, method, params, seed=0)


def scaled(base: State, delta: State, lam: float) -> State:
    """``θ_0 + λ Δ`` in the base's dtypes."""
    return {k: (base[k].float() + lam * delta[k]).to(base[k].dtype) for k in base}


def choose(
    setup: Setup, tasks: Sequence[str], label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The chosen hyperparameters of one method on one subset (validation only)."""
    strategy = get_strategy(METHODS[label])
    assert strategy.merge_method is not None
    k = len(tasks)
    densities: list[float | None] = [None]
    if strategy.density != "none":
        densities = list(strategy.usable_densities(args.densities, k)) or [None]
    extras: list[dict[str, Any]] = [{}]
    if label == "cart":
        extras = [{"rank_fraction": r} for r in args.cart_ranks]
    best: dict[str, Any] | None = None
    for extra in extras:
        for d in densities:
            score, lam, evals = _search_one(setup, tasks, label, strategy, d, extra, args)
            if best is None or score > best["val_score"]:
                best = {"lambda": lam, "density": d, "extra": extra, "val_score": score,
                        "evaluations": evals}  # fmt: skip
    assert best is not None
    return best


def _search_one(
    setup: Setup,
    tasks: Sequence[str],
    label: str,
    strategy: Any,
    density: float | None,
    extra: Mapping[str, Any],
    args: argparse.Namespace,
) -> tuple[float, float, int]:
    k = len(tasks)
    method = "opcm_whole" if label == "opcm_whole" else strategy.merge_method

    def params(lam: float) -> dict[str, Any]:
        return {**strategy.method_params([lam] * k, density), **extra}

    if label in NOT_HOMOGENEOUS:

        def merged(lam: float) -> State:
            return merge(setup, tasks, method, params(lam))
    else:
        one = merge(setup, tasks, method, params(1.0))
        delta = {n: one[n].float() - setup.base[n].float() for n in setup.base}

        def merged(lam: float) -> State:
            return scaled(setup.base, delta, lam)

    sub = TaskEvaluator({t: setup.data[t] for t in tasks}, setup.evaluator.templates, 64)
    objective = sub.search_objective(lambda lam, _d: merged(lam[0]), setup.heads)
    res = search_merge(objective, 1, lambdas=args.lambdas, densities=[None], passes=0)
    return res.score, res.lambdas[0], res.evaluations


def final_merge(
    setup: Setup, tasks: Sequence[str], label: str, chosen: Mapping[str, Any]
) -> tuple[State, float, float]:
    """The chosen merge, timed: (state, seconds, peak MiB)."""
    k = len(tasks)
    if label == "average":
        method, params = "task_arithmetic", {"weight": [1.0 / k] * k}
    else:
        strategy = get_strategy(METHODS[label])
        assert strategy.merge_method is not None
        method = "opcm_whole" if label == "opcm_whole" else strategy.merge_method
        params = {**strategy.method_params([chosen["lambda"]] * k, chosen["density"]),
                  **chosen["extra"]}  # fmt: skip
    with PeakMemory() as mem:
        start = time.perf_counter()
        state = merge(setup, tasks, method, params)
        seconds = time.perf_counter() - start
    return state, seconds, mem.mib


def test_scores(setup: Setup, tasks: Sequence[str], states: Callable[[str], State]) -> dict:
    """Per task: test accuracy and per-example correctness."""
    out = {}
    for t in tasks:
        r = setup.evaluator.score(t, {**states(t), **setup.heads[t]}, "test")
        correct = (np.asarray(r["predictions"]) == np.asarray(r["labels"])).astype(np.int8)
        out[t] = {"accuracy": float(r["accuracy"]), "correct": correct.tolist()}
    return out


def merge_and_score(
    setup: Setup, tasks: Sequence[str], label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Choose ``label``'s hyperparameters on validation, merge once (timed), score on test."""
    t0 = time.perf_counter()
    chosen = {"lambda": 1.0, "density": None, "extra": {}} if label == "average" \
        else choose(setup, tasks, label, args)  # fmt: skip
    search_s = time.perf_counter() - t0
    state, secs, mib = final_merge(setup, tasks, label, chosen)
    return {"chosen": chosen, "test": test_scores(setup, tasks, lambda _t: state),
            "cost": {"seconds": secs, "peak_mib": mib, "search_seconds": search_s}}  # fmt: skip


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


# ------------------------------------------------------------------ statistics and reports


def summarise(runs: list[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Pooled over the subsets of one k: averages, intervals and differences from TA."""
    strata = [f"{'+'.join(r['tasks'])}|{t}" for r in runs for t in r["tasks"]]
    correct = {m: {f"{'+'.join(r['tasks'])}|{t}": r["test"][m][t]["correct"]
                   for r in runs for t in r["tasks"]} for m in labels}  # fmt: skip
    boot = bootstrap_averages(correct, strata, reference=REFERENCE, samples=2000, seed=0)
    rows = {}
    for m in labels:
        row = {
            "abs_avg": boot.estimate_abs[m], "abs_ci": interval(boot.abs_avg[m]),
            "norm_avg": boot.estimate_norm[m], "norm_ci": interval(boot.norm_avg[m]),
            "per_task": {t: float(np.mean([r["test"][m][t]["accuracy"] for r in runs
                                           if t in r["tasks"]])) for t in TASKS
                         if any(t in r["tasks"] for r in runs)},
        }  # fmt: skip
        if m not in (REFERENCE, CONTROL):
            row["seconds"] = float(np.mean([r["cost"][m]["seconds"] for r in runs]))
            row["peak_mib"] = float(np.max([r["cost"][m]["peak_mib"] for r in runs]))
        if m != "task_arithmetic" and "task_arithmetic" in labels:
            ta = "task_arithmetic"
            row["vs_ta_abs"] = paired_difference(
                boot.abs_avg[m], boot.abs_avg[ta], boot.estimate_abs[m] - boot.estimate_abs[ta]
            )
            row["vs_ta_norm"] = paired_difference(
                boot.norm_avg[m], boot.norm_avg[ta],
                boot.estimate_norm[m] - boot.estimate_norm[ta])  # fmt: skip
        rows[m] = row
    return {"subsets": [r["tasks"] for r in runs], "n_strata": len(strata), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``results.json`` as markdown."""
    lines = [f"Command: `{result['command']}`", ""]
    for k, s in result["by_k"].items():
        lines += [f"### {k} tasks ({len(s['subsets'])} subsets, test splits, 95% intervals)", "",
                  "| method | abs avg | norm avg | Δ norm vs TA [95% CI] (p) | merge s | "
                  "peak MiB | " + " | ".join(s["rows"][REFERENCE]["per_task"]) + " |",
                  "|---" * (6 + len(s["rows"][REFERENCE]["per_task"])) + "|"]  # fmt: skip
        order = sorted(s["rows"], key=lambda m: -s["rows"][m]["norm_avg"])
        for m in order:
            r = s["rows"][m]
            d = r.get("vs_ta_norm")
            diff = f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] ({d['p']:.3f})" if d else "–"
            cost = f"{r['seconds']:.2f} | {r['peak_mib']:.0f}" if "seconds" in r else "– | –"
            tasks = " | ".join(f"{100 * a:.1f}" for a in r["per_task"].values())
            lines.append(
                f"| {m} | {r['abs_avg']:.2f} [{r['abs_ci'][0]:.2f}, {r['abs_ci'][1]:.2f}] | "
                f"{r['norm_avg']:.2f} [{r['norm_ci'][0]:.2f}, {r['norm_ci'][1]:.2f}] | {diff} | "
                f"{cost} | {tasks} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Normalised average against the number of tasks, one line per method (95% CIs).

    The individual fine-tunes are the dashed line at 100; the untouched backbone (about
    50) is left out so that the methods' differences stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in result["by_k"])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    labels = [m for m in dict.fromkeys(m for k in ks for m in result["by_k"][str(k)]["rows"])
              if m not in (REFERENCE, CONTROL)]  # fmt: skip
    colours = plt.get_cmap("tab20")  # 20 colours, called by index
    markers = "os^vDP*Xhp<>d8H"
    for i, m in enumerate(labels):
        have = [k for k in ks if m in result["by_k"][str(k)]["rows"]]
        rows = [result["by_k"][str(k)]["rows"][m] for k in have]
        y = [r["norm_avg"] for r in rows]
        err = [[r["norm_avg"] - r["norm_ci"][0] for r in rows],
               [r["norm_ci"][1] - r["norm_avg"] for r in rows]]  # fmt: skip
        x = [k + (i - len(labels) / 2) * 0.025 for k in have]
        ax.errorbar(x, y, yerr=err, marker=markers[i % len(markers)], capsize=2, label=m,
                    color=colours(i % 20), lw=2.2 if m == "task_arithmetic" else 1.2,
                    ls="--" if m == "task_arithmetic" else "-")  # fmt: skip
    ax.axhline(100, color="black", ls=":", lw=1, label="individual fine-tunes")
    ax.set_xticks(ks)
    ax.set_xlabel("number of merged tasks")
    ax.set_ylabel("normalised average accuracy (% of the individual fine-tunes)")
    ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ main


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
