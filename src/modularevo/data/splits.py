"""Deterministic, order-independent splits and class balancing.

Every example carries a *group* key (its text, a licence key, a module path).
The split of a group is a pure function of ``(salt, group)``: a hash mapped to
[0, 1) and cut at the split fractions. So two builds give identical splits, no
group straddles two splits, and a corpus and a task of the same domain that use
the same salt put a shared text in the same split (no corpus-train/task-test leak).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

SPLITS: tuple[str, str, str] = ("train", "validation", "test")


def unit_hash(salt: str, key: str) -> float:
    """A stable number in [0, 1) for ``key`` under ``salt`` (same on every machine)."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_of(salt: str, group: str, fractions: Sequence[float]) -> str:
    """The split name that ``group`` falls into for the given train/val/test ``fractions``."""
    u = unit_hash(salt, group)
    edge = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def dedupe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated texts; drop every copy of a text that carries two different labels
    (or, for generation rows, two different targets)."""
    seen: dict[str, dict[str, Any]] = {}
    conflicted: set[str] = set()
    for row in rows:
        text = row["text"]
        old = seen.get(text)
        if old is None:
            seen[text] = row
        elif (old.get("label"), old.get("target")) != (row.get("label"), row.get("target")):
            conflicted.add(text)
    return [r for t, r in seen.items() if t not in conflicted]


def assign_splits(
    rows: Iterable[dict[str, Any]], *, salt: str, fractions: Sequence[float]
) -> dict[str, list[dict[str, Any]]]:
    """Group rows into splits by their ``group`` key, each split sorted by hash of its text.

    A row may carry its own ``split`` (a builder that already split its source units, e.g.
    by :func:`split_of` on a sentence id, before joining them into longer texts).
    """
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for row in rows:
        out[row.get("split") or split_of(salt, str(row["group"]), fractions)].append(row)
    for name in SPLITS:
        out[name].sort(key=lambda r: unit_hash(salt + name, r["text"]))
    return out


def balance(rows: list[dict[str, Any]], *, per_class: int | None) -> list[dict[str, Any]]:
    """Keep at most ``per_class`` rows of each label, in the rows' (hashed) order."""
    if per_class is None:
        return rows
    taken: dict[Any, int] = defaultdict(int)
    kept = []
    for row in rows:
        if taken[row["label"]] < per_class:
            taken[row["label"]] += 1
            kept.append(row)
    return kept


def chunk_paragraphs(text: str, *, min_chars: int = 80, max_chars: int = 1200) -> list[str]:
    """Split ``text`` at blank lines, merge short paragraphs, and cut long ones at ``max_chars``.

    Whitespace inside a paragraph is normalised to single spaces.
    """
    chunks: list[str] = []
    buf = ""
    for para in text.split("\n\n"):
        para = " ".join(para.split())
        if not para:
            continue
        buf = f"{buf}\n\n{para}" if buf else para
        if len(buf) >= min_chars:
            chunks.extend(_cut(buf, max_chars))
            buf = ""
    if buf:
        if chunks and len(buf) < min_chars:
            chunks[-1] = f"{chunks[-1]}\n\n{buf}"
        else:
            chunks.append(buf)
    return chunks


def _cut(text: str, max_chars: int) -> list[str]:
    pieces = []
    while len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars)
        cut = cut if cut > max_chars // 2 else max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces
