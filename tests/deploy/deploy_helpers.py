"""A tiny learnable classification task in tensors, and a tiny BERT classifier for it."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertForSequenceClassification

VOCAB, SEQ, LABELS = 40, 12, 3


def toy_task(n: int, *, seed: int, rule: str = "majority") -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels): ``majority``: the word group (id mod 3) that
    dominates the text; ``first``: the group of the first word (the rest is noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(LABELS, (n,), generator=g)
    ids = torch.randint(4, VOCAB, (n, SEQ), generator=g)
    planted = torch.rand(n, SEQ, generator=g) < (0.7 if rule == "majority" else 0.0)
    base = torch.randint(4, VOCAB - LABELS, (n, SEQ), generator=g)
    grouped = base - base % LABELS + labels[:, None]
    ids = torch.where(planted, grouped, ids)
    if rule == "first":
        ids[:, 1] = grouped[:, 1]
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    lengths = torch.randint(SEQ // 2, SEQ + 1, (n,), generator=g)
    mask[torch.arange(SEQ)[None, :] >= lengths[:, None]] = 0
    return ids * mask, mask, labels


def toy_bert(seed: int = 0, ffn: int = 64, heads: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
        intermediate_size=ffn, num_labels=LABELS, max_position_embeddings=SEQ,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(cfg)


def batches(data: tuple[Tensor, Tensor, Tensor], *, batch: int, seed: int):
    """Endless shuffled mini-batches as ``dict(input_ids, attention_mask, labels)``."""
    ids, mask, y = data
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(len(y), (batch,), generator=g)
        yield {"input_ids": ids[idx], "attention_mask": mask[idx], "labels": y[idx]}


def train(model: nn.Module, data, *, steps: int, lr: float, params=None, seed: int = 0) -> None:
    """A plain AdamW loop on ``model(**batch).loss`` (over ``params``, default all)."""
    opt = torch.optim.AdamW(list(params if params is not None else model.parameters()), lr=lr,
                            weight_decay=0.0)  # fmt: skip
    model.train()
    for _, b in zip(range(steps), batches(data, batch=32, seed=seed), strict=False):
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@torch.inference_mode()
def loss_and_accuracy(model: nn.Module, data) -> tuple[float, float]:
    ids, mask, y = data
    model.eval()
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss = torch.nn.functional.cross_entropy(logits, y)
    return float(loss), float((logits.argmax(-1) == y).float().mean())
