"""Offline datasets: domain corpora, downstream tasks and image sets, plus user files.

Every dataset has fixed seeded train/validation/test splits and a data card.
``load_dataset`` takes a registered name, a local file, or a Hub id.

Example:
    >>> from modularevo.data import DATASETS, load_dataset
    >>> DATASETS.names()[:3]
    >>> load_dataset("math-type")["train"].features["label"].num_classes
    25
"""

from modularevo.data import code as _code  # noqa: F401  (registers datasets)
from modularevo.data import images as _images  # noqa: F401
from modularevo.data import law as _law  # noqa: F401
from modularevo.data import math as _math  # noqa: F401
from modularevo.data import multilingual as _multilingual  # noqa: F401
from modularevo.data.card import DataCard
from modularevo.data.load import (
    UnknownDatasetError,
    build_dataset,
    cached_card,
    check_dataset_name,
    load_dataset,
    resolve_spec,
)
from modularevo.data.spec import DATASETS, DatasetSpec, register_dataset

__all__ = [
    "DATASETS",
    "DataCard",
    "DatasetSpec",
    "UnknownDatasetError",
    "build_dataset",
    "cached_card",
    "check_dataset_name",
    "load_dataset",
    "register_dataset",
    "resolve_spec",
]
