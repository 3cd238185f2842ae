"""Data cards: what a built dataset contains, where it came from, how long it took."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modularevo.utils.atomic import atomic_write_text

CARD_FILE = "card.json"


@dataclass
class DataCard:
    """The card stored beside every built dataset (``card.json``).

    Args:
        name: registry name or the local path the data came from.
        kind: ``corpus``, ``task`` or ``images``.
        domain: domain of the data; a task's domain names its corpus.
        description: one line.
        source: source packages with versions, e.g. ``["mathgenerator 1.5.0"]``.
        licence: licence of the data.
        sizes: examples per split.
        chars: characters of text per split (0 for images).
        label_names: the label set in id order (empty for corpora).
        label_counts: per split, count per label name.
        samples: a few rows per split (text truncated, images summarised).
        build_seconds: wall time of the build, measured.
        build_cpu_seconds: CPU time of the build (this process and its children), which is
            a fairer figure than wall time on a shared machine.
        options: build options used (part of the cache key).
        notes: how splits were made, leakage handling, caveats.
    """

    name: str
    kind: str
    domain: str
    description: str = ""
    source: list[str] = field(default_factory=list)
    licence: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    build_seconds: float = 0.0
    build_cpu_seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def to_json(self) -> str:
        """The card as indented JSON."""
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=False)

    def save(self, folder: str | Path) -> Path:
        """Write ``card.json`` into ``folder`` atomically and return its path."""
        path = Path(folder) / CARD_FILE
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> DataCard:
        """Read the ``card.json`` in ``folder``."""
        data = json.loads((Path(folder) / CARD_FILE).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
