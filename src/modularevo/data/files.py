"""User data: local jsonl/csv/parquet/text files and Hub datasets, checked and normalised.

A single file is split into train/validation/test by a seeded hash of each text
(80/10/10); a folder with ``train.*``, ``validation.*`` (or ``valid.*``/``dev.*``)
and ``test.*`` keeps its own splits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa

from modularevo.data.splits import SPLITS, split_of
from modularevo.errors import InputError

SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
}
_SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


def looks_like_path(name: str) -> bool:
    """True if ``name`` is meant as a file path (known suffix, ./, ../, / or ~ prefix)."""
    return Path(name).suffix.lower() in SUFFIXES or name.startswith(("/", "./", "../", "~"))


def read_table(path: Path) -> pa.Table:
    """Read one local file into an Arrow table (text files: one row per non-empty line).

    Raises:
        InputError: unknown suffix, an empty file, a malformed line or an unreadable file.
    """
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot read {str(path)!r}: unknown suffix {path.suffix!r}; expected one of "
            f"{sorted(SUFFIXES)}"
        )
    try:
        table = _read(path, fmt)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except pa.ArrowException as exc:
        raise InputError(
            f"cannot read {str(path)!r} as {fmt}: {str(exc).splitlines()[0]}; fix the file"
        ) from None
    if table.num_columns == 0:  # with a header, `normalise` names the empty split
        raise InputError(
            f"{str(path)!r} holds no rows; a dataset file needs one example per "
            f"{'line' if fmt in ('json', 'text') else 'row'}"
        )
    return table


def _read(path: Path, fmt: str) -> pa.Table:
    if fmt == "text":
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return pa.table({"text": lines})
    if fmt == "csv":
        from pyarrow import csv

        return csv.read_csv(path)
    if fmt == "parquet":
        from pyarrow import parquet

        return parquet.read_table(path)
    return pa.Table.from_pylist(read_json_rows(path))


def read_json_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file (or of a ``.json`` file holding one list of objects).

    Raises:
        InputError: naming the first malformed line and what it holds.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file"
            ) from None
        return _check_rows(path, rows if isinstance(rows, list) else [rows], 1)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(
                f"line {lineno} of {str(path)!r} is not valid JSON ({exc.msg} at column "
                f"{exc.colno}): {line[:80]!r}; a jsonl file holds one JSON object per line"
            ) from None
        _check_rows(path, rows[-1:], lineno)
    return rows


def _check_rows(path: Path, rows: list[Any], first_line: int) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(
                f"row {first_line + i} of {str(path)!r} is a {type(row).__name__}, not an object; "
                'each row must be an object such as {"text": "...", "label": "..."}'
            )
    return rows


def load_local(
    path: Path,
    *,
    text_column: str | None,
    label_column: str | None,
    label_names: list[str] | None,
    seed: int = 0,
) -> datasets.DatasetDict:
    """Load a local file or split folder as a checked train/validation/test DatasetDict.

    Raises:
        InputError: missing file, unknown format, missing column, empty split, unknown label.
    """
    path = path.expanduser()
    if not path.exists():
        raise InputError(
            f"dataset file {str(path)!r} does not exist; pass an existing jsonl/csv/parquet/txt "
            "file or a registered name (see `modularevo data ls`)"
        )
    if path.is_dir():
        tables = {split: read_table(_find_split(path, split)) for split in SPLITS}
    else:
        tables = _hash_split(read_table(path), text_column or "text", seed)
    raw = datasets.DatasetDict({k: datasets.Dataset(t) for k, t in tables.items()})
    return normalise(
        raw,
        source=str(path),
        text_column=text_column,
        label_column=label_column,
        label_names=label_names,
    )


def _find_split(folder: Path, split: str) -> Path:
    for alias in _SPLIT_ALIASES[split]:
        for suffix in SUFFIXES:
            if (folder / f"{alias}{suffix}").exists():
                return folder / f"{alias}{suffix}"
    raise InputError(
        f"folder {str(folder)!r} has no {split} file; expected one of "
        f"{[a + '.jsonl' for a in _SPLIT_ALIASES[split]]} (or .csv/.parquet/.txt)"
    )


def _hash_split(table: pa.Table, text_column: str, seed: int) -> dict[str, pa.Table]:
    _require(table.column_names, text_column, "text", "a single file")
    texts = table.column(text_column).to_pylist()
    names = [split_of(f"local/{seed}", str(t), (0.8, 0.1, 0.1)) for t in texts]
    return {s: table.filter(pa.array([n == s for n in names])) for s in SPLITS}


def _require(found: list[str], column: str, role: str, where: str) -> None:
    if column not in found:
        raise InputError(
            f"{where} has no {role} column {column!r}; found columns {found}; pass "
            f"{role}_column=<one of them> (CLI/YAML key `{role}_column`)"
        )


def normalise(
    raw: datasets.DatasetDict,
    *,
    source: str,
    text_column: str | None,
    label_column: str | None,
    label_names: list[str] | None,
) -> datasets.DatasetDict:
    """Rename to ``text``/``label``, make labels a ClassLabel, and check every split.

    Without a label column, a ``target`` column is kept as text: a generation task
    (question ``text`` -> answer ``target``).
    """
    text_col = text_column or "text"
    first = next(iter(raw.values()))
    if label_column is None and "label" in first.column_names:
        label_column = "label"
    target = "target" if label_column is None and "target" in first.column_names else None
    out = {}
    for split, ds in raw.items():
        where = f"the {split} split of {source!r}"
        _require(ds.column_names, text_col, "text", where)
        if label_column is not None:
            _require(ds.column_names, label_column, "label", where)
        if len(ds) == 0:
            raise InputError(
                f"{where} is empty (0 rows); every split needs examples: add rows or, for a single "
                "file, provide more lines so that the 80/10/10 split leaves some in each"
            )
        keep = [c for c in (text_col, label_column, target) if c]
        ds = (
            ds.select_columns(keep).rename_column(text_col, "text")
            if text_col != "text"
            else (ds.select_columns(keep))
        )
        if label_column and label_column != "label":
            ds = ds.rename_column(label_column, "label")
        if target is not None and ds.features["target"] != datasets.Value("string"):
            ds = ds.cast_column("target", datasets.Value("string"))  # e.g. numeric answers
        out[split] = ds
    dsd = datasets.DatasetDict(out)
    return _encode_labels(dsd, source, label_names) if label_column else dsd


def _encode_labels(
    dsd: datasets.DatasetDict, source: str, label_names: list[str] | None
) -> datasets.DatasetDict:
    feature = dsd["train"].features["label"]
    if label_names is None:
        if isinstance(feature, datasets.ClassLabel):
            label_names = list(feature.names)
        else:
            label_names = [str(v) for v in sorted(set(dsd["train"]["label"]), key=_sort_key)]
    index = {name: i for i, name in enumerate(label_names)}
    out = {}
    for split, ds in dsd.items():
        feat = ds.features["label"]
        values = [
            str(feat.int2str(v)) if isinstance(feat, datasets.ClassLabel) else str(v)
            for v in ds["label"]
        ]
        bad = sorted({v for v in values if v not in index})
        if bad:
            raise InputError(
                f"the {split} split of {source!r} has label(s) {bad[:5]} outside the label set "
                f"{label_names[:20]}; fix those rows, or pass label_names=[...] listing every label"
            )
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=label_names)}
        )
        out[split] = datasets.Dataset.from_dict(
            {"text": [str(t) for t in ds["text"]], "label": [index[v] for v in values]}, features
        )
    return datasets.DatasetDict(out)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` forbids contacting the Hub."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def load_hub(
    name: str, *, text_column: str | None, label_column: str | None, label_names: list[str] | None
) -> datasets.DatasetDict:
    """Load a Hub dataset by id (only when online) and normalise it like a local file.

    Raises:
        InputError: while offline, or if the Hub cannot be reached.
    """
    offline_msg = (
        f"dataset {name!r} looks like a Hub id but the Hub is unreachable here (offline); "
        f"download it elsewhere, save its splits as train.jsonl/validation.jsonl/test.jsonl in a "
        f"folder and pass that folder's path instead, or use a registered dataset "
        f"(`modularevo data ls`)."
    )
    if hub_offline():
        raise InputError(offline_msg)
    try:
        raw = datasets.load_dataset(name)
    except (ConnectionError, OSError) as exc:
        raise InputError(offline_msg) from exc
    if not isinstance(raw, datasets.DatasetDict):
        raise InputError(f"Hub dataset {name!r} did not load as named splits")
    if "validation" not in raw and "test" in raw:
        parts = raw["train"].train_test_split(test_size=0.1, seed=0)
        raw = datasets.DatasetDict(
            {"train": parts["train"], "validation": parts["test"], "test": raw["test"]}
        )
    return normalise(
        raw,
        source=name,
        text_column=text_column,
        label_column=label_column,
        label_names=label_names,
    )
