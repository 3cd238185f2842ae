"""A handful of question -> answer pairs a tiny decoder can memorise, as a DatasetDict."""

from __future__ import annotations

import datasets

PAIRS = [
    ("colour of grass", "green"),
    ("colour of sky", "blue"),
    ("opposite of up", "down"),
    ("two plus two", "4"),
    ("capital of france", "paris"),
    ("first letter", "a"),
]


def pairs_dataset(repeat: int = 4) -> datasets.DatasetDict:
    """Train: every pair ``repeat`` times; validation and test: every pair once."""
    features = datasets.Features(
        {"text": datasets.Value("string"), "target": datasets.Value("string"),
         "category": datasets.Value("string")}
    )  # fmt: skip

    def split(times: int) -> datasets.Dataset:
        rows = [p for p in PAIRS for _ in range(times)]
        return datasets.Dataset.from_dict(
            {"text": [q for q, _ in rows], "target": [a for _, a in rows],
             "category": ["toy"] * len(rows)},
            features=features,
        )  # fmt: skip

    return datasets.DatasetDict({"train": split(repeat), "validation": split(1), "test": split(1)})
