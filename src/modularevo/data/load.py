"""``load_dataset``: a registered name, a local file, or a Hub dataset, as a DatasetDict.

Registered datasets are built once and cached as Arrow under
``cache_dir("datasets")/<name>-<options hash>/`` with ``card.json`` beside the
splits; the folder is written atomically, so a killed build leaves nothing half-made.

Example:
    >>> from modularevo.data import load_dataset
    >>> dsd = load_dataset("math-type", max_examples_per_split=100)
    >>> dsd["train"].features["label"].names[:3]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from modularevo.data.build import build_text, make_card
from modularevo.data.card import DataCard
from modularevo.data.files import load_hub, load_local, looks_like_path
from modularevo.data.spec import DATASETS, DatasetSpec
from modularevo.errors import InputError, UnknownNameError
from modularevo.utils.atomic import atomic_dir
from modularevo.utils.cache import cache_dir

logger = logging.getLogger(__name__)

# Bump when a builder changes what it produces, so stale caches are rebuilt.
BUILD_VERSION = 2


class UnknownDatasetError(UnknownNameError, InputError):
    """A dataset name that is neither registered, nor a local file, nor a Hub id."""


def resolve_spec(name: str) -> DatasetSpec:
    """The registered spec for ``name``.

    Raises:
        UnknownDatasetError: with close names and every registered name.
    """
    if name not in DATASETS:
        raise UnknownDatasetError(
            DATASETS.unknown_message(name)
            + " A local file path (jsonl/csv/parquet/txt) or a Hub id 'org/name' works too."
        )
    return DATASETS.get(name)


def check_dataset_name(name: str | Path) -> None:
    """Check, without loading anything, that ``name`` can be a dataset (for dry runs).

    Accepts a registered name, an existing local file or folder, or a Hub id ``org/name``.

    Raises:
        UnknownDatasetError: a misspelt registered name (did-you-mean).
        InputError: a path that does not exist.
    """
    text = str(name)
    if text in DATASETS or ("/" in text and not looks_like_path(text)):
        return
    path = Path(text).expanduser()
    if path.exists():
        return
    if looks_like_path(text):
        raise InputError(
            f"dataset file {text!r} does not exist; pass an existing jsonl/csv/parquet/txt "
            "file or a registered name (see `modularevo data ls`)"
        )
    resolve_spec(text)


def resolved_options(spec: DatasetSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """Spec defaults updated with ``overrides``; unknown option names raise InputError."""
    unknown = sorted(set(overrides) - set(spec.options) - {"seed"})
    if unknown:
        raise InputError(
            f"dataset {spec.name!r} has no option(s) {unknown}; its options are "
            f"{sorted([*spec.options, 'seed'])}"
        )
    return {"seed": 0, **spec.options, **overrides}


def dataset_folder(spec: DatasetSpec, options: dict[str, Any]) -> Path:
    """Cache folder of ``spec`` built with ``options`` (it may not exist yet)."""
    key = json.dumps({"v": BUILD_VERSION, **options}, sort_keys=True, default=str)
    digest = hashlib.blake2b(key.encode(), digest_size=5).hexdigest()
    return cache_dir("datasets") / f"{spec.name}-{digest}"


def build_dataset(
    name: str, *, rebuild: bool = False, **options: Any
) -> tuple[datasets.DatasetDict, DataCard]:
    """Build (or load from cache) a registered dataset and its card.

    Args:
        name: registered dataset name (see ``modularevo data ls``).
        rebuild: build again even when a cached copy exists.
        **options: build options overriding the spec's defaults (sizes, ``seed``).

    Returns:
        The full DatasetDict (train/validation/test) and its :class:`DataCard`.

    Raises:
        UnknownDatasetError: for an unregistered name.
        InputError: for unknown options, a missing source package, or an empty split.
    """
    spec = resolve_spec(name)
    opts = resolved_options(spec, options)
    folder = dataset_folder(spec, opts)
    if folder.exists() and not rebuild:
        return _load_dict(folder), DataCard.load(folder)
    logger.info("building dataset %s with %s into %s", name, opts, folder)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    dsd = spec.builder(**opts) if spec.kind == "images" else build_text(spec, opts)
    card = make_card(spec, dsd, options=opts, seconds=time.perf_counter() - start)
    card.build_cpu_seconds = round(_cpu_seconds() - cpu_start, 2)
    with atomic_dir(folder, overwrite=True) as tmp, _quiet_datasets():
        dsd.save_to_disk(str(tmp / "data"))
        card.save(tmp)
    logger.info("built %s in %.1f s: %s", name, card.build_seconds, card.sizes)
    return _load_dict(folder), card


def _load_dict(folder: Path) -> datasets.DatasetDict:
    dsd = datasets.load_from_disk(str(folder / "data"))
    assert isinstance(dsd, datasets.DatasetDict)
    return dsd


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' own progress bars (we log one line per build instead)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def cached_card(name: str, **options: Any) -> DataCard | None:
    """The card of a built dataset, or None if it has not been built with these options."""
    spec = resolve_spec(name)
    folder = dataset_folder(spec, resolved_options(spec, options))
    return DataCard.load(folder) if (folder / "card.json").exists() else None


def load_dataset(
    name_or_path: str | Path,
    *,
    max_examples_per_split: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    **options: Any,
) -> datasets.DatasetDict:
    """Load a dataset as train/validation/test splits with ``text``/``label`` or ``image`` columns.

    Args:
        name_or_path: a registered name (``math``, ``math-type``, ``digits`` ...), a local
            jsonl/json/csv/parquet/txt file or a folder of ``train.*``/``validation.*``/``test.*``
            files, or a Hub id ``org/name``.
        max_examples_per_split: keep at most this many rows of each split (the first rows,
            which are in a seeded random order).
        text_column: for files/Hub data, the column holding the text (default ``text``).
        label_column: for files/Hub data, the label column (default ``label`` if present).
        label_names: for files/Hub data, the allowed labels in id order.
        **options: build options of a registered dataset (see its card), e.g. ``seed``.

    Returns:
        A ``datasets.DatasetDict`` with splits ``train``, ``validation``, ``test``; labels are a
        ``ClassLabel`` feature.

    Raises:
        InputError: unknown name (with suggestions), missing column, empty split, label outside
            the label set, or a Hub id while offline.
    """
    columns = {"text_column": text_column, "label_column": label_column,
               "label_names": label_names}  # fmt: skip
    dsd = _load_any(str(name_or_path), columns, options)
    if max_examples_per_split is not None:
        dsd = datasets.DatasetDict(
            {k: v.select(range(min(max_examples_per_split, len(v)))) for k, v in dsd.items()}
        )
    return dsd


def _load_any(name: str, columns: dict[str, Any], options: dict[str, Any]) -> datasets.DatasetDict:
    if name in DATASETS:
        if any(v is not None for v in columns.values()):
            raise InputError(
                f"{name!r} is a registered dataset with fixed columns; text_column/label_column/"
                "label_names only apply to local files or Hub datasets"
            )
        return build_dataset(name, **options)[0]
    seed = int(options.pop("seed", 0))
    if options:
        raise InputError(
            f"build options {sorted(options)} only apply to registered datasets, not to "
            f"{name!r}; drop them (files and Hub data take text_column/label_column/label_names)"
        )
    if Path(name).exists() or looks_like_path(name):
        return load_local(Path(name), seed=seed, **columns)
    if "/" in name:
        return load_hub(name, **columns)
    resolve_spec(name)  # raises with did-you-mean
    raise AssertionError("unreachable")
