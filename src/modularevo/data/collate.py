"""Tokenize a text-classification split once, then pad each batch to its own longest row.

Example:
    >>> enc = tokenize_split(ds["train"], tokenizer, max_length=128)   # doctest: +SKIP
    >>> batch = pad_batch([enc[i] for i in range(8)], pad_id=0)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError

Example = dict[str, Any]


def pad_id_of(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS token, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def tokenize_split(
    split: Any,
    tokenizer: Any,
    *,
    max_length: int,
    chunk: int = 1000,
) -> list[Example]:
    """Tokenize the ``text`` column of a split (truncated, unpadded) and keep ``label``.

    Args:
        split: a ``datasets.Dataset`` (or list of dicts) with ``text`` and ``label``.
        tokenizer: a Hugging Face tokenizer.
        max_length: truncation length in tokens.
        chunk: texts tokenized per call.

    Returns:
        One dict per example with ``input_ids``, ``attention_mask``, optional
        ``token_type_ids`` (lists of ints) and ``labels`` (int).

    Raises:
        InputError: if the split lacks a ``text`` or ``label`` column.
    """
    columns = getattr(split, "column_names", None) or (list(split[0]) if len(split) else [])
    missing = [c for c in ("text", "label") if c not in columns]
    if missing:
        raise InputError(
            f"split lacks column(s) {missing}; found {columns}, expected 'text' and 'label'"
        )
    out: list[Example] = []
    for start in range(0, len(split), chunk):
        rows = split[start : start + chunk]
        texts, labels = _columns(rows)
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        for i, label in enumerate(labels):
            ex: Example = {k: list(enc[k][i]) for k in keys}
            ex["labels"] = int(label)
            out.append(ex)
    return out


def _columns(rows: Any) -> tuple[Sequence[str], Sequence[int]]:
    if isinstance(rows, dict):  # datasets.Dataset slice -> dict of columns
        return rows["text"], rows["label"]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def pad_batch(examples: Sequence[Example], *, pad_id: int) -> dict[str, Tensor]:
    """Right-pad a list of tokenized examples to the longest one in the list.

    Args:
        examples: dicts from :func:`tokenize_split`, or from
            :func:`modularevo.data.generation.tokenize_pairs` (per-token ``labels``).
        pad_id: id written into padded ``input_ids`` positions (attention mask 0 there).

    Returns:
        ``input_ids``/``attention_mask``/(``token_type_ids``) as (batch, longest) int64
        and ``labels`` as (batch,) int64, or, for per-token labels, (batch, longest)
        int64 padded with -100 (ignored by the loss).
    """
    longest = max(len(ex["input_ids"]) for ex in examples)
    batch: dict[str, Tensor] = {}
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0}
    for key, value in fill.items():
        if key not in examples[0]:
            continue
        rows = [ex[key] + [value] * (longest - len(ex[key])) for ex in examples]
        batch[key] = torch.tensor(rows, dtype=torch.long)  # (batch, longest)
    if isinstance(examples[0]["labels"], list):  # per-token labels of a generation task
        rows = [ex["labels"] + [-100] * (longest - len(ex["labels"])) for ex in examples]
        batch["labels"] = torch.tensor(rows, dtype=torch.long)  # (batch, longest)
        return batch
    batch["labels"] = torch.tensor([ex["labels"] for ex in examples], dtype=torch.long)
    return batch
