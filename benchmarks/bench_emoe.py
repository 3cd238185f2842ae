"""Fine-tune MiniLM dense vs EMoE (arXiv 2310.10908) on one offline task; print both accuracies.

Run (about 2 x 2 minutes on a shared 2-core CPU with these flags)::

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/bench_emoe.py \
        --task lang-id --steps 80 --max-length 32 --experts 16 --top-k 4 --layers last2

Add ``--only dense`` or ``--only emoe`` to run one arm (each stays under 5 minutes at 160 steps).
Measured (lang-id validation, first 500, seed 0): 80 steps dense 0.582 / EMoE 0.544;
160 steps dense 0.700 / EMoE 0.650 -- far from converged, one seed (see docs/emoe.md).

Both runs use the same seed, data order, optimizer (AdamW, linear decay, no warmup) and
classifier initialisation; the only difference is the EMoE conversion (full fine-tuning,
gates refreshed from the keys every step, as the reference's ``--one_score``). Accuracy is
on the validation split (never test). One seed and few steps: a smoke-level comparison,
not a reproduction of the paper's numbers.
"""

from __future__ import annotations

import argparse
import time

import torch

from modularevo.data import load_dataset
from modularevo.emoe import emoe_convert
from modularevo.models import load_model


def _batches(ds, tok, batch_size: int, max_length: int, seed: int, limit: int | None = None):
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    order = order[: limit or len(order)]
    texts, labels = list(ds.select(order)["text"]), torch.tensor(list(ds.select(order)["label"]))
    for i in range(0, len(order) - batch_size + 1, batch_size):
        enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length)  # fmt: skip
        yield enc["input_ids"], enc["attention_mask"], labels[i : i + batch_size]


@torch.no_grad()
def _accuracy(model, tok, ds, max_length: int) -> float:
    model.eval()
    correct = 0
    for ids, mask, labels in _batches(ds, tok, 50, max_length, seed=0):
        correct += int(
            (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == labels).sum()
        )
    return correct / (len(ds) // 50 * 50)


def run(args: argparse.Namespace, *, emoe: bool) -> tuple[float, float]:
    """Fine-tune once; return (validation accuracy, seconds)."""
    dsd = load_dataset(args.task)
    n_labels = dsd["train"].features["label"].num_classes
    torch.manual_seed(args.seed)
    model, tok = load_model("minilm", "classifier", num_labels=n_labels)
    if emoe:
        emoe_convert(model, experts=args.experts, top_k=args.top_k, layers=args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / args.steps))
    model.train()
    start, step = time.perf_counter(), 0
    while step < args.steps:
        data = _batches(
            dsd["train"], tok, args.batch, args.max_length, step, args.steps * args.batch
        )
        for ids, mask, labels in data:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step >= args.steps:
                break
    val = dsd["validation"].select(range(min(args.max_eval, len(dsd["validation"]))))
    return _accuracy(model, tok, val, args.max_length), time.perf_counter() - start


def main() -> None:
    """Parse flags, run dense then EMoE, print both accuracies."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="legal-category")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-eval", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--layers", default="last2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["dense", "emoe"], help="run one arm (keeps each run short)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is best on a shared CPU)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for name, emoe in (("dense", False), ("emoe", True)):
        if args.only not in (None, name):
            continue
        acc, sec = run(args, emoe=emoe)
        print(f"{name:5s} {args.task}: val acc {acc:.4f} ({args.steps} steps, {sec:.0f}s)")


if __name__ == "__main__":
    main()
