"""Paired test: two fine-tuned classifiers on the same test examples (learned vs random module).

Loads two ``modularevo finetune`` output folders, predicts the first ``--max-examples``
examples of the task's test split with each, and reports both accuracies, the paired
difference with a 95% bootstrap interval over examples, and the exact McNemar p-value
on the discordant pairs.

    HF_HUB_OFFLINE=1 python benchmarks/bench_module_vs_random.py \
        runs/i12/langid_learned/model runs/i12/langid_random/model --task lang-id
"""

from __future__ import annotations

import argparse
import json
import math

import torch


def _correct(model_dir: str, task: str, max_examples: int, max_length: int) -> list[int]:
    from modularevo.data import load_dataset
    from modularevo.data.collate import pad_batch, pad_id_of, tokenize_split
    from modularevo.evaluation.predict import eval_predictions
    from modularevo.models.load import load_model
    from modularevo.utils.device import build_accelerator

    data = load_dataset(task)["test"]
    data = data.select(range(min(max_examples, len(data))))
    model, tok = load_model(model_dir, "classifier")
    examples = tokenize_split(data, tok, max_length=max_length)
    pad = pad_id_of(tok)
    preds, labels, _ = eval_predictions(
        build_accelerator(), model, len(examples),
        lambda idx: pad_batch([examples[i] for i in idx], pad_id=pad), batch_size=64,
    )  # fmt: skip
    return [int(p == y) for p, y in zip(preds, labels, strict=True)]


def _mcnemar(a: list[int], b: list[int]) -> float:
    """Exact two-sided McNemar p-value (binomial on the discordant pairs)."""
    n01 = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    n10 = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    """Print and return the paired comparison as JSON."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("--task", default="lang-id")
    ap.add_argument("--max-examples", type=int, default=300)
    ap.add_argument("--max-length", type=int, default=64)
    args = ap.parse_args()
    a = _correct(args.model_a, args.task, args.max_examples, args.max_length)
    b = _correct(args.model_b, args.task, args.max_examples, args.max_length)
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    boot = d[torch.randint(0, d.numel(), (10_000, d.numel()), generator=g)].mean(dim=1)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    out = {"n": len(a), "acc_a": sum(a) / len(a), "acc_b": sum(b) / len(b),
           "diff_a_minus_b": float(d.mean()), "ci95": [lo, hi],
           "mcnemar_p": _mcnemar(a, b)}  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
