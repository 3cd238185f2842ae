"""Turn a spec's raw rows into a split, balanced, typed :class:`datasets.DatasetDict`."""

from __future__ import annotations

import logging
import platform
from collections import Counter
from importlib import metadata
from typing import Any

import datasets

from modularevo.data.card import DataCard
from modularevo.data.spec import DatasetSpec
from modularevo.data.splits import SPLITS, assign_splits, balance, dedupe
from modularevo.errors import InputError

logger = logging.getLogger(__name__)

SPLIT_NOTE = (
    "Splits are fixed by a hash of (domain salt, group key): deterministic, order-independent and "
    "disjoint; the corpus and the task of one domain share the salt and group keys, so no text "
    "of a task's test split is in its corpus's train split."
)


def split_salt(spec: DatasetSpec, options: dict[str, Any]) -> str:
    """The hashing salt of a spec: shared by every dataset of the same domain and seed."""
    return f"modularevo/{spec.domain}/{options.get('seed', 0)}"


def build_text(spec: DatasetSpec, options: dict[str, Any]) -> datasets.DatasetDict:
    """Build a corpus, task or generation task from ``spec.builder(**options)`` rows."""
    rows = dedupe(spec.builder(**options))
    parts = assign_splits(rows, salt=split_salt(spec, options), fractions=spec.split_fractions)
    if spec.kind in ("task", "generation"):
        parts["train"] = balance(parts["train"], per_class=spec.train_per_class)
        for name in ("validation", "test"):
            parts[name] = balance(parts[name], per_class=spec.eval_per_class)
    for name in SPLITS:
        if not parts[name]:
            raise InputError(
                f"dataset {spec.name!r} built with options {options} has an empty {name} split "
                f"({len(rows)} examples in all); raise the size options (defaults: "
                f"{dict(spec.options)})"
            )
    if spec.kind == "corpus":
        features = datasets.Features({"text": datasets.Value("string")})
        return datasets.DatasetDict(
            {
                n: datasets.Dataset.from_dict({"text": [r["text"] for r in parts[n]]}, features)
                for n in SPLITS
            }
        )
    if spec.kind == "generation":
        return _generation_dict(parts)
    names = list(spec.label_names or sorted({r["label"] for r in rows}))
    index = {n: i for i, n in enumerate(names)}
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
    )
    out = {}
    for n in SPLITS:
        texts = [r["text"] for r in parts[n]]
        labels = [index[r["label"]] for r in parts[n]]
        out[n] = datasets.Dataset.from_dict({"text": texts, "label": labels}, features)
    return datasets.DatasetDict(out)


GENERATION_FEATURES = datasets.Features(
    {
        "text": datasets.Value("string"),
        "target": datasets.Value("string"),
        "category": datasets.Value("string"),
    }
)


def _generation_dict(parts: dict[str, list[dict[str, Any]]]) -> datasets.DatasetDict:
    """Question (``text``) -> answer (``target``) rows, with the row's ``category``."""
    out = {}
    for n in SPLITS:
        columns = {
            "text": [r["text"] for r in parts[n]],
            "target": [r["target"] for r in parts[n]],
            "category": [str(r.get("label", "")) for r in parts[n]],
        }
        out[n] = datasets.Dataset.from_dict(columns, GENERATION_FEATURES)
    return datasets.DatasetDict(out)


def package_versions(packages: tuple[str, ...]) -> list[str]:
    """``"name version"`` for each installed distribution (``"name"`` when unknown)."""
    found = []
    for pkg in packages:
        if pkg == "python-stdlib":
            found.append(f"python-stdlib {platform.python_version()}")
            continue
        try:
            found.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            found.append(pkg)
    return found


def make_card(
    spec: DatasetSpec, dsd: datasets.DatasetDict, *, options: dict[str, Any], seconds: float
) -> DataCard:
    """Describe a built dataset: sizes, characters, labels, samples, build time."""
    card = DataCard(
        name=spec.name,
        kind=spec.kind,
        domain=spec.domain,
        description=spec.description,
        source=package_versions(spec.source),
        licence=spec.licence,
        build_seconds=round(seconds, 2),
        options=dict(options),
        notes=SPLIT_NOTE if spec.kind != "images" else "",
    )
    describe(card, dsd)
    return card


def describe(card: DataCard, dsd: datasets.DatasetDict, *, n_samples: int = 3) -> None:
    """Fill ``card``'s sizes, chars, labels and samples from ``dsd``."""
    for key, ds in dsd.items():
        split = str(key)
        card.sizes[split] = len(ds)
        has_text = "text" in ds.column_names
        card.chars[split] = sum(len(t) for t in ds["text"]) if has_text else 0
        label = ds.features.get("label")
        if "category" in ds.column_names:  # a generation task: counts per category
            counts = Counter(ds["category"])
            card.label_counts[split] = {str(k): v for k, v in sorted(counts.items())}
        if isinstance(label, datasets.ClassLabel):
            card.label_names = list(label.names)
            counts = Counter(ds["label"])
            card.label_counts[split] = {str(label.int2str(k)): v for k, v in sorted(counts.items())}
        rows = range(min(n_samples, len(ds)))
        card.samples[split] = [_summarise(ds[i], ds.features) for i in rows]


def _summarise(row: dict[str, Any], features: datasets.Features) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        feat = features.get(key)
        if isinstance(feat, datasets.ClassLabel):
            out[key] = f"{value} ({feat.int2str(value)})"
        elif isinstance(value, str):
            out[key] = value if len(value) <= 300 else value[:300] + "…"
        elif key == "image":
            out[key] = f"image {_shape(value)}"
        else:
            out[key] = value
    return out


def _shape(value: Any) -> str:
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return "x".join(map(str, dims)) or type(value).__name__
