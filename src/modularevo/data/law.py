"""Law: the ``law`` corpus and the 9-class ``legal-category`` task (ScanCode LicenseDB).

Source: PyPI ``licensedcode-data`` (CC-BY-4.0): 2,150 active licence texts, each with
a ``category``, and ~35k rules (licence notices and texts) labelled with a licence key.

* ``law`` (corpus): licence texts cut into paragraphs, plus the longer rule texts.
* ``legal-category`` (task): a rule text or a licence paragraph -> the category of its
  licence. CLA, Patent License and Unstated License (18-20 licences each or fewer) are
  merged into ``Other``.

Every row's group key is its licence key and both datasets share the domain salt, so
all text of one licence (its paragraphs and its rules) lies in one split of each dataset:
nothing in the task's test split comes from a licence seen in the corpus's train split.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Any

from modularevo.data.spec import DatasetSpec, register_dataset
from modularevo.data.splits import chunk_paragraphs
from modularevo.errors import InputError

LEGAL_CATEGORIES: tuple[str, ...] = (
    "Permissive",
    "Copyleft",
    "Copyleft Limited",
    "Commercial",
    "Proprietary Free",
    "Free Restricted",
    "Source-available",
    "Public Domain",
    "Other",
)
_MERGED = {"CLA": "Other", "Patent License": "Other", "Unstated License": "Other"}
_FRONT = re.compile(r"^(\w+):[ \t]*(.*)$", re.M)


def _data_root() -> Path:
    spec = importlib.util.find_spec("licensedcode")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the law datasets need the PyPI package licensedcode-data, which is not installed; "
            "run `pip install licensedcode-data` (part of `pip install 'modularevo[data]'`)"
        )
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "data" / "licenses").is_dir():
            return Path(loc) / "data"
    raise InputError("licensedcode-data is installed but has no data/licenses folder; reinstall it")


def _parse(path: Path) -> tuple[dict[str, str], str]:
    raw = path.read_text(encoding="utf-8", errors="replace")
    if not raw.startswith("---"):
        return {}, raw.strip()
    _, front, body = raw.split("---", 2)
    return dict(_FRONT.findall(front)), body.strip()


@functools.lru_cache(maxsize=1)
def licences() -> dict[str, tuple[str, str]]:
    """``{licence key: (category, full text)}`` of active (non-deprecated) licences."""
    out = {}
    for path in sorted((_data_root() / "licenses").glob("*.LICENSE")):
        meta, body = _parse(path)
        if meta.get("is_deprecated") == "yes" or not body or "key" not in meta:
            continue
        category = meta.get("category", "Unstated License")
        out[meta["key"]] = (_MERGED.get(category, category), body)
    return out


@functools.lru_cache(maxsize=1)
def rules(min_chars: int = 100) -> list[tuple[str, str]]:
    """``(licence key, text)`` of rules about one active licence, not false positives."""
    known = licences()
    out = []
    for path in sorted((_data_root() / "rules").glob("*.RULE")):
        meta, body = _parse(path)
        key = meta.get("license_expression", "")
        if key in known and meta.get("is_false_positive") != "yes" and len(body) >= min_chars:
            out.append((key, body))
    return out


def build_law_corpus(*, seed: int, chunks_per_licence: int, max_rule_chars: int) -> list[dict]:
    """Rows of ``law``: licence paragraphs (at most ``chunks_per_licence`` each) and rules."""
    del seed  # the source is fixed; the split seed is applied by the caller
    rows: list[dict[str, Any]] = []
    for key, (_, text) in licences().items():
        rows += [{"text": c, "group": key} for c in chunk_paragraphs(text)[:chunks_per_licence]]
    for key, text in rules():
        rows.append({"text": " ".join(text.split())[:max_rule_chars], "group": key})
    return rows


def build_legal_category(
    *, seed: int, chunks_per_licence: int, max_chars: int, max_per_licence: int
) -> list[dict]:
    """Rows of ``legal-category``: rule texts and licence paragraphs labelled by category.

    At most ``max_per_licence`` rows come from one licence, so a few licences with
    hundreds of rules (GPL, MIT) do not fill a whole class or a whole split.
    """
    del seed
    known = licences()
    texts: dict[str, list[str]] = {
        key: chunk_paragraphs(text)[:chunks_per_licence] for key, (_, text) in known.items()
    }
    for key, text in rules():
        texts[key].append(" ".join(text.split()))
    return [
        {"text": t[:max_chars], "group": key, "label": known[key][0]}
        for key, items in texts.items()
        for t in items[:max_per_licence]
    ]


_SOURCE = ("licensedcode-data",)
_LICENCE = "CC-BY-4.0 (ScanCode LicenseDB, nexB Inc. and others)"

register_dataset(
    DatasetSpec(
        name="law",
        kind="corpus",
        domain="law",
        builder=build_law_corpus,
        source=_SOURCE,
        licence=_LICENCE,
        description="Licence texts (paragraphs) and legal notices from ScanCode LicenseDB",
        options={"chunks_per_licence": 3, "max_rule_chars": 800},
    )
)

register_dataset(
    DatasetSpec(
        name="legal-category",
        kind="task",
        domain="law",
        builder=build_legal_category,
        source=_SOURCE,
        licence=_LICENCE,
        description="Legal notice or licence paragraph -> licence category (9 classes), balanced",
        options={"chunks_per_licence": 3, "max_chars": 1000, "max_per_licence": 25},
        train_per_class=600,
        eval_per_class=75,
        label_names=LEGAL_CATEGORIES,
    )
)
