"""Corpora for pretraining: load texts, train the tokenizer, pack token blocks per corpus."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from modularevo.data import load_dataset
from modularevo.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusTexts:
    """Train and validation documents of one corpus."""

    name: str
    train: list[str]
    validation: list[str]


def load_corpora(names: list[str], *, max_docs: int | None, seed: int) -> list[CorpusTexts]:
    """Load each corpus (registered name or local text file) via ``modularevo.data``.

    Raises:
        InputError: if a corpus has no text in its train or validation split.
    """
    out: list[CorpusTexts] = []
    for name in names:
        dsd = load_dataset(name, max_examples_per_split=max_docs, seed=seed)
        texts = {s: [t for t in dsd[s]["text"] if t and t.strip()] for s in ("train", "validation")}
        for split, rows in texts.items():
            if not rows:
                raise InputError(
                    f"pretraining corpus {name!r} has an empty {split} split; pick a corpus "
                    "with text in both train and validation (modularevo data ls)"
                )
        out.append(CorpusTexts(name, texts["train"], texts["validation"]))
        log.info("corpus %s: %d train / %d validation docs", name, *map(len, texts.values()))
    return out


def tokenizer_sample(corpora: list[CorpusTexts], *, n_docs: int, seed: int) -> list[str]:
    """An equal share of train documents per corpus, in a seeded order, for tokenizer training."""
    rng = random.Random(seed)
    per = max(1, n_docs // max(1, len(corpora)))
    sample: list[str] = []
    for c in corpora:
        docs = list(c.train)
        rng.shuffle(docs)
        sample.extend(docs[:per])
    rng.shuffle(sample)
    return sample


def pack_blocks(texts: list[str], tokenizer: object, *, seq_len: int) -> Tensor:
    """Tokenize, join documents with EOS and cut into ``(n_blocks, seq_len)`` int64 blocks.

    Raises:
        InputError: if the texts give fewer tokens than one block.
    """
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    ids: list[int] = []
    for start in range(0, len(texts), 1000):
        enc = tokenizer(texts[start : start + 1000], add_special_tokens=False)  # type: ignore[operator]
        for row in enc["input_ids"]:
            ids.extend(row)
            ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise InputError(
            f"the corpus gives {len(ids)} tokens, fewer than one block of seq_len={seq_len}; "
            "add text or lower seq_len"
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def sample_batch(
    blocks: list[Tensor], *, batch_size: int, step: int, generator: torch.Generator
) -> Tensor:
    """A batch whose rows cycle through the corpora (equal mixture), blocks drawn at random."""
    rows = []
    for i in range(batch_size):
        pool = blocks[(step * batch_size + i) % len(blocks)]
        j = int(torch.randint(len(pool), (1,), generator=generator))
        rows.append(pool[j])
    return torch.stack(rows)  # (batch, seq_len)
