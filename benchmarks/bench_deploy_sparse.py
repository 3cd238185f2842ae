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
project's venv, so it lives in its own venv and only step 4 runs there (this file imports no
torch in that mode)::

    python3.11 -m venv /tmp/ds-venv && /tmp/ds-venv/bin/pip install deepsparse==1.8.0

Run (project venv; the timing subprocess uses ``--engine-python``)::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deploy_sparse.py \\
        --tasks math-type lang-id --sparsity 0.75 --steps 300 \\
        --engine-python /tmp/ds-venv/bin/python --out runs/bench_deploy_sparse

Without deepsparse in ``--engine-python`` the timing records why and times ONNX Runtime only.
``--retime`` times finished tasks again from their saved ONNX files (no training) and keeps
the earlier timings in ``timing_earlier``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is absent from the DeepSparse venv that runs ``time``
    from torch import Tensor, nn

ENCODER_LINEAR = re.compile(r"(^|\.)encoder\.layer\.\d+\.")
ENGINES = ("deepsparse", "ort")
KINDS = ("dense", "sparse")
SEQ = 64

# ---------------------------------------------------------------- the unstructured module


def encoder_linear_weights(model: nn.Module) -> dict[str, Tensor]:
    """Name -> weight of every Linear inside an encoder block (``encoder.layer.<i>.``)."""
    from torch import nn

    return {
        f"{name}.weight": mod.weight
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and ENCODER_LINEAR.search(name)
    }


def magnitude_masks(
    weights: Mapping[str, Tensor],
    *,
    sparsity: float,
    keep: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per tensor, keep the ``round((1 − sparsity)·numel)`` entries of largest |w|.

    Args:
        weights: name -> weight.
        sparsity: the fraction of each tensor set to zero, in [0, 1].
        keep: the current masks; an entry outside them never comes back (pruning is monotone).

    Returns:
        name -> bool mask of the weight's shape with exactly that many True entries.
    """
    import torch

    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    masks: dict[str, Tensor] = {}
    for name, w in weights.items():
        score = w.detach().abs().float().flatten()  # (numel,)
        if keep is not None:
            score = torch.where(keep[name].flatten(), score, torch.full_like(score, -1.0))
        k = round((1.0 - sparsity) * score.numel())
        m = torch.zeros(score.numel(), dtype=torch.bool)
        if k > 0:
            m[score.topk(k).indices] = True
        masks[name] = m.view(w.shape)
    return masks


def cubic_sparsity(step: int, *, target: float, ramp_steps: int) -> float:
    """Zhu & Gupta's schedule: ``target·(1 − (1 − t)^3)``, t = step / ramp_steps (≤ 1)."""
    t = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
    return target * (1.0 - (1.0 - t) ** 3)


def zero_outside_(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Set every weight outside its mask to exactly 0 (in place)."""
    import torch

    with torch.no_grad():
        for name, w in weights.items():
            w.mul_(masks[name].to(w.dtype))


def measured_sparsity(weights: Mapping[str, Tensor]) -> float:
    """Fraction of exact zeros over all the given weights."""
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(1, sum(w.numel() for w in weights.values()))


def _batches(n: int, batch: int, *, seed: int) -> Iterator[Tensor]:
    import torch

    g = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=g).split(batch)


def train_sparse(
    model: nn.Module,
    data: tuple[Tensor, Tensor, Tensor],
    *,
    steps: int,
    sparsity: float,
    ramp: float = 0.5,
    prune_every: int = 10,
    lr: float = 1e-4,
    batch: int = 16,
    seed: int = 0,
    teacher: nn.Module | None = None,
    distill: Any = None,
    log_every: int = 50,
) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
    """Gradual magnitude pruning of the encoder Linears with the zeros held, then a fixed mask.

    Args:
        model: the classifier (``model(input_ids=, attention_mask=, labels=).loss``).
        data: (input_ids, attention_mask, labels) of the train split.
        steps: optimizer steps in all; the sparsity reaches ``sparsity`` at ``ramp·steps``.
        sparsity: target fraction of zeros in every encoder Linear weight.
        ramp: fraction of the steps over which the sparsity rises (cubic schedule).
        prune_every: steps between mask updates during the ramp.
        lr: AdamW peak learning rate (5% warm-up, then linear decay to 0).
        batch: examples per step.
        seed: data order.
        teacher: the dense model to distill from (with ``distill``, a ``DistillConfig``).
        distill: ``DistillConfig`` or None (plain cross-entropy).
        log_every: steps between log records.

    Returns:
        (the final masks, the log: step, loss, scheduled and measured sparsity, seconds).
    """
    import torch
    from torch import nn

    from modularevo.training.distill import Distiller

    weights = encoder_linear_weights(model)
    if not weights:
        raise ValueError("the model has no Linear under encoder.layer.<i>.; nothing to prune")
    student: nn.Module = model
    if teacher is not None and distill is not None:
        student = Distiller(model, teacher, distill)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, round(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps)
    )
    ramp_steps = round(ramp * steps)
    masks = magnitude_masks(weights, sparsity=0.0)
    ids, am, y = data
    order = _batches(len(y), batch, seed=seed)
    student.train()
    log: list[dict[str, float]] = []
    t0 = time.time()
    for step in range(steps):
        if step <= ramp_steps and (step % prune_every == 0 or step == ramp_steps):
            target = cubic_sparsity(step, target=sparsity, ramp_steps=ramp_steps)
            masks = magnitude_masks(weights, sparsity=target, keep=masks)
            zero_outside_(weights, masks)
        idx = next(order)
        n = int(am[idx].sum(1).max())  # drop all-pad columns
        loss = student(input_ids=ids[idx, :n], attention_mask=am[idx, :n], labels=y[idx]).loss
        loss.backward()
        for name, w in weights.items():
            if w.grad is not None:
                w.grad.mul_(masks[name].to(w.grad.dtype))
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        zero_outside_(weights, masks)  # AdamW's moments would move pruned entries
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step, "loss": float(loss.detach()),
                   "sparsity_target": cubic_sparsity(step, target=sparsity,
                                                     ramp_steps=ramp_steps),
                   "sparsity": measured_sparsity(weights), "seconds": time.time() - t0}  # fmt: skip
            log.append(rec)
            print(f"  step {step}/{steps} loss {rec['loss']:.3f} sparsity "
                  f"{rec['sparsity']:.3f} ({rec['seconds']:.0f}s)", flush=True)  # fmt: skip
    if isinstance(student, Distiller):
        student.close()  # its hooks would keep recording block outputs in later forwards
    model.eval()
    return masks, log


# ---------------------------------------------------------------- accuracy and its intervals


def encode(tok: Any, ds: Any, max_len: int = SEQ) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels) padded to ``max_len``."""
    import torch

    enc = tok(list(ds["text"]), truncation=True, max_length=max_len, padding="max_length",
              return_tensors="pt")  # fmt: skip
    return enc["input_ids"], enc["attention_mask"], torch.tensor(ds["label"])


def correctness(
    model: nn.Module, data: tuple[Tensor, Tensor, Tensor], batch: int = 64
) -> list[int]:
    """Per example 1 if the argmax logit is the label, else 0 (eval mode, dynamic padding)."""
    import torch

    ids, am, y = data
    model.eval()
    out: list[int] = []
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            n = int(am[i : i + batch].sum(1).max())
            logits = model(input_ids=ids[i : i + batch, :n], attention_mask=am[i : i + batch, :n])
            out += (logits.logits.argmax(-1) == y[i : i + batch]).int().tolist()
    return out


def accuracy_stats(dense: Sequence[int], sparse: Sequence[int], *, samples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Accuracies (%) with Wilson intervals, and sparse − dense with its paired bootstrap
    95% interval and McNemar's exact p (``modularevo.evaluation.stats``)."""
    import numpy as np

    from modularevo.evaluation.stats import (
        bootstrap_averages,
        mcnemar,
        paired_difference,
        wilson_interval,
    )

    cd, cs = np.asarray(dense, bool), np.asarray(sparse, bool)
    n = len(cd)
    boot = bootstrap_averages({"dense": {"t": cd}, "sparse": {"t": cs}}, ["t"],
                              samples=samples, seed=seed)  # fmt: skip
    diff = paired_difference(boot.abs_avg["sparse"], boot.abs_avg["dense"],
                             boot.estimate_abs["sparse"] - boot.estimate_abs["dense"])  # fmt: skip
    out: dict[str, Any] = {"n": n, "diff": diff, "mcnemar": mcnemar(cs, cd)}
    for name, c in (("dense", cd), ("sparse", cs)):
        lo, hi = wilson_interval(int(c.sum()), n)
        out[name] = {"acc": 100 * float(c.mean()), "lo": 100 * lo, "hi": 100 * hi}
    return out


# ---------------------------------------------------------------- timing (no torch here)


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


# ---------------------------------------------------------------- one task


def _tag(sparsity: float) -> str:
    return f"s{round(100 * sparsity)}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


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
    print(f"[{task} {_tag(sparsity)}] {args.steps} steps to sparsity {sparsity}"
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


# ---------------------------------------------------------------- report


def _pm(x: dict) -> str:
    return f"{x['acc']:.2f} [{x['lo']:.1f}, {x['hi']:.1f}]"


def table(records: Sequence[dict], batches: Sequence[int] = (1, 8)) -> str:
    """Markdown: accuracy (with intervals) and DeepSparse / ONNX Runtime latency per record."""
    lines = [
        "| task | sparsity (encoder Linears) | steps | n | dense acc % [95% CI] "
        "| sparse acc % [95% CI] | sparse − dense [95% CI] | McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        a, d = r["accuracy"], r["accuracy"]["diff"]
        lines.append(
            f"| {r['task']} | {r['module']['encoder_linear_sparsity']:.3f} | {r['steps']} "
            f"| {a['n']} | {_pm(a['dense'])} | {_pm(a['sparse'])} "
            f"| {d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] | {a['mcnemar']['p']:.3g} |"
        )
    lines += ["", "| task | sparsity | engine | batch | dense ms (IQR) | sparse ms (IQR) "
              "| speed-up [95% CI] |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        t = r.get("timing") or {}
        for b in batches:
            pt = t.get(f"batch{b}") or {}
            for eng in ENGINES:
                if f"{eng}/speedup" not in pt:
                    continue
                d, s, sp = pt[f"{eng}/dense"], pt[f"{eng}/sparse"], pt[f"{eng}/speedup"]
                lines.append(
                    f"| {r['task']} | {r['sparsity_target']:.2f} | {eng} | {b} "
                    f"| {d['median_ms']:.1f} ({d['iqr_ms']:.1f}) "
                    f"| {s['median_ms']:.1f} ({s['iqr_ms']:.1f}) "
                    f"| {sp['ratio']:.2f}× [{sp['lo']:.2f}, {sp['hi']:.2f}] |"
                )
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict], path: Path, batch: int = 8) -> None:
    """Accuracy difference (with its interval) vs speed-up at ``batch``, per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for eng, colour in (("deepsparse", "tab:blue"), ("ort", "tab:grey")):
        for r in records:
            sp = ((r.get("timing") or {}).get(f"batch{batch}") or {}).get(f"{eng}/speedup")
            if sp is None:
                continue
            d = r["accuracy"]["diff"]
            ax.errorbar(sp["ratio"], d["diff"], yerr=[[d["diff"] - d["lo"]], [d["hi"] - d["diff"]]],
                        xerr=[[sp["ratio"] - sp["lo"]], [sp["hi"] - sp["ratio"]]], fmt="o",
                        color=colour, capsize=3)  # fmt: skip
            label = f"{r['task']} {_tag(r['sparsity_target'])}"
            ax.annotate(label, (sp["ratio"], d["diff"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colour)  # fmt: skip
        ax.plot([], [], "o", color=colour, label=f"{eng} (sparse vs dense, same engine)")
    ax.axhline(0, color="black", lw=0.5)
    ax.axhline(-1, color="tab:red", lw=0.5, ls="--", label="−1 point")
    ax.axvline(1, color="black", lw=0.5)
    ax.axvline(2.5, color="tab:green", lw=0.5, ls="--", label="2.5× (issue 16 target)")
    ax.set_xlabel(f"speed-up at batch {batch}, 1 thread (median dense / median sparse)")
    ax.set_ylabel("test accuracy, sparse − dense (points, 95% CI)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---------------------------------------------------------------- main


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
            done = args.out / f"{task}-{_tag(s)}.json"
            tdir = args.out / task / _tag(s)
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
