"""Multilingual: the ``multilingual`` corpus and the ``lang-id`` task (Django catalogs).

Source: the compiled gettext catalogs (``.mo``) shipped in the PyPI ``django`` wheel
(BSD-3-Clause): ~1,200 catalogs, 98 locales, human translations of the same English
UI strings, i.e. a sentence-parallel corpus in the spirit of Europarl.

* ``multilingual`` (corpus): for every locale with at least ``min_strings`` strings,
  its translations joined into ~``chunk_chars`` texts (one string per line); English
  source strings form the ``en`` part.
* ``lang-id`` (task): one translated string -> its language, over ``LANG_ID_LANGUAGES``.

Splits are decided per English source string (msgid), for both datasets with the same
salt, so every translation of a sentence lies in the same split everywhere: no sentence
of the task's test split (in any language) is in the corpus's train split.
"""

from __future__ import annotations

import functools
import gettext
import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Any

from modularevo.data.spec import DatasetSpec, register_dataset
from modularevo.data.splits import SPLITS, split_of
from modularevo.errors import InputError

LANG_ID_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "cs",
    "ru", "uk", "tr", "fi", "hu", "el", "ar", "he", "ja", "zh_Hans",
)  # fmt: skip
_SALT = "modularevo/multilingual/{seed}"


def _django_root() -> Path:
    spec = importlib.util.find_spec("django")
    if spec is None or spec.origin is None:
        raise InputError(
            "the multilingual datasets need the PyPI package django (only its translation "
            "catalogs are read); run `pip install django` (part of "
            "`pip install 'modularevo[data]'`)"
        )
    return Path(spec.origin).parent


def _msgid(key: Any) -> str:
    text = key[0] if isinstance(key, tuple) else key
    return text.split("\x04", 1)[-1]  # drop a msgctxt prefix


@functools.lru_cache(maxsize=1)
def catalogs() -> dict[str, dict[str, str]]:
    """``{locale: {English msgid: translation}}`` over all Django catalogs, plus ``en``."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(_django_root().glob("**/locale/*/LC_MESSAGES/*.mo")):
        locale = path.parts[-3]
        with path.open("rb") as fh:
            catalog = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        for key, value in sorted(catalog.items(), key=lambda kv: str(kv[0])):
            msgid = _msgid(key)
            if msgid.strip() and value.strip() and value != msgid:
                out[locale].setdefault(msgid, value.strip())
                out["en"].setdefault(msgid, msgid.strip())
    return dict(out)


def _split(seed: int, msgid: str) -> str:
    return split_of(_SALT.format(seed=seed), msgid, (0.8, 0.1, 0.1))


def build_multilingual_corpus(*, seed: int, min_strings: int, chunk_chars: int) -> list[dict]:
    """Rows of ``multilingual``: per locale and split, strings joined into ~chunk_chars texts."""
    rows: list[dict[str, Any]] = []
    for locale, strings in sorted(catalogs().items()):
        if len(strings) < min_strings:
            continue
        parts: dict[str, list[str]] = {s: [] for s in SPLITS}
        for msgid, text in strings.items():
            parts[_split(seed, msgid)].append(text)
        for split, texts in parts.items():
            for i, chunk in enumerate(_join(texts, chunk_chars)):
                rows.append({"text": chunk, "group": f"{locale}/{split}/{i}", "split": split})
    return rows


def _join(texts: list[str], chunk_chars: int) -> list[str]:
    chunks, buf = [], ""
    for text in texts:
        buf = f"{buf}\n{text}" if buf else text
        if len(buf) >= chunk_chars:
            chunks.append(buf)
            buf = ""
    return [*chunks, buf] if buf else chunks


def build_lang_id(*, seed: int, min_chars: int) -> list[dict]:
    """Rows of ``lang-id``: one string (at least ``min_chars`` long) -> its language."""
    cats = catalogs()
    missing = [lang for lang in LANG_ID_LANGUAGES if lang not in cats]
    if missing:
        raise InputError(f"the installed django has no catalogs for {missing}; upgrade django")
    return [
        {"text": " ".join(text.split()), "group": msgid, "label": lang,
         "split": _split(seed, msgid)}
        for lang in LANG_ID_LANGUAGES
        for msgid, text in cats[lang].items()
        if len(text) >= min_chars
    ]  # fmt: skip


_SOURCE = ("django",)
_LICENCE = "BSD-3-Clause (Django and its translators)"

register_dataset(
    DatasetSpec(
        name="multilingual",
        kind="corpus",
        domain="multilingual",
        builder=build_multilingual_corpus,
        source=_SOURCE,
        licence=_LICENCE,
        description="Human UI translations in 70+ languages (Django catalogs), ~600-char texts",
        options={"min_strings": 600, "chunk_chars": 600},
    )
)

register_dataset(
    DatasetSpec(
        name="lang-id",
        kind="task",
        domain="multilingual",
        builder=build_lang_id,
        source=_SOURCE,
        licence=_LICENCE,
        description="Sentence -> language (20 languages, parallel UI strings), balanced",
        options={"min_chars": 8},
        train_per_class=400,
        eval_per_class=50,
        label_names=LANG_ID_LANGUAGES,
    )
)
