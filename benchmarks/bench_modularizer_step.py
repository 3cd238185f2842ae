"""Cost of one modularizer step relative to one plain full fine-tuning step (target <= 1.3x).

Same model, same batch, CPU: the modularizer step is the masked forward (W ⊙ 1[S>0] for
every maskable weight and bias), the α·kept-fraction term, backward to the scores and
AdamW on the scores; the full fine-tuning step is forward, backward and AdamW on every
parameter. Both use the model's ordinary forward (full vocabulary projection); the
modularizer's sparse MLM head (logits only on scored tokens) is timed as a third line.

Run:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_modularizer_step.py --model minilm
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def _time(step: Callable[[], None], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--kind", default="masked_lm")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from modularevo.models import describe, load_model
    from modularevo.modules.layers import MaskedModel, MaskScores, maskable_params

    model, _ = load_model(args.model, args.kind)
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch_size, args.max_length), generator=g)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.15, ids, -100)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    model.train()
    full_opt = torch.optim.AdamW([p for p in model.parameters()], lr=1e-5)

    def full_step() -> None:
        for p in model.parameters():
            p.requires_grad_(True)
        model(**batch).loss.backward()
        full_opt.step()
        full_opt.zero_grad(set_to_none=True)

    t_full = _time(full_step, warmup=2, repeats=args.repeats)

    arch = describe(model)
    params = dict(model.named_parameters())
    names = maskable_params(model, arch.maskable)
    scores = MaskScores({n: params[n].shape for n in names}, generator=g)
    wrapped = MaskedModel(model, scores).train()
    mask_opt = torch.optim.AdamW(scores.parameters(), lr=0.01, weight_decay=0.0)

    def mask_step(sparse: str | None) -> Callable[[], None]:
        def step() -> None:
            loss = wrapped(**batch, sparse_head=sparse).loss + 100.0 * scores.kept_fraction()
            loss.backward()
            mask_opt.step()
            mask_opt.zero_grad(set_to_none=True)

        return step

    t_mask = _time(mask_step(None), warmup=2, repeats=args.repeats)
    print(f"model {args.model} ({sum(p.numel() for p in params.values()) / 1e6:.1f}M params, "
          f"{len(names)} masked tensors), batch {args.batch_size} x {args.max_length}, "
          f"{args.threads} threads")  # fmt: skip
    print(f"full fine-tuning step: {t_full * 1000:8.1f} ms")
    print(f"modularizer step:      {t_mask * 1000:8.1f} ms   ratio {t_mask / t_full:.2f}x")
    if args.kind == "masked_lm" and len(arch.heads) == 1:
        t_sparse = _time(mask_step(arch.heads[0]), warmup=1, repeats=args.repeats)
        print(f"modularizer step, sparse MLM head: {t_sparse * 1000:8.1f} ms   "
              f"ratio {t_sparse / t_full:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
