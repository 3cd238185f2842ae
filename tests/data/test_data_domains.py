"""Small builds of the law, multilingual, code and image datasets: sizes, labels, splits, leaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modularevo.data import build_dataset, load_dataset
from modularevo.data.code import CODE_PACKAGES, _is_test_path
from modularevo.data.law import LEGAL_CATEGORIES
from modularevo.data.multilingual import LANG_ID_LANGUAGES
from modularevo.errors import InputError

SPLITS = ("train", "validation", "test")


def _disjoint(dsd, column="text"):
    seen = [set(map(str, dsd[s][column])) for s in SPLITS]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]


def _lines(dsd, split):
    return {" ".join(line.split()) for text in dsd[split]["text"] for line in text.split("\n")}


def test_lang_id_and_multilingual_corpus():
    task, card = build_dataset("lang-id")
    assert task["train"].features["label"].names == list(LANG_ID_LANGUAGES)
    assert set(card.label_counts["test"]) == set(LANG_ID_LANGUAGES)
    assert max(card.label_counts["train"].values()) == 400  # the stated cap
    _disjoint(task)
    corpus, ccard = build_dataset("multilingual", min_strings=900)
    assert ccard.kind == "corpus"
    assert len(ccard.sizes) == 3
    # every translation of a test sentence is kept out of the corpus's train split
    assert not _lines(corpus, "train") & set(task["test"]["text"])


def test_code_package_small(tmp_path: Path, monkeypatch):
    opts = {"per_package": 40, "max_files": 3, "max_chars": 800}
    task, _ = build_dataset("code-package", **opts)
    assert task["train"].features["label"].names == list(CODE_PACKAGES)
    assert len(CODE_PACKAGES) >= 10
    assert all(len(t) <= 800 for t in task["train"]["text"])
    assert not any(
        t.lstrip().startswith(("def test", "async def test")) for t in task["train"]["text"]
    )
    _disjoint(task)
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "second"))
    again, _ = build_dataset("code-package", **opts)
    assert again["test"]["text"] == task["test"]["text"]


def test_test_files_are_excluded():
    assert _is_test_path(Path("asyncio/test/test_x.py"))
    assert _is_test_path(Path("idlelib/idle_test/mock.py"))
    assert _is_test_path(Path("pkg/foo_test.py"))
    assert not _is_test_path(Path("unittest/case.py"))


@pytest.mark.slow
def test_code_corpus_does_not_leak_into_task_test():
    corpus, _ = build_dataset("code", per_package=4, max_files=2)
    task, _ = build_dataset("code-package", per_package=40, max_files=2, max_chars=100000)
    assert not set(corpus["train"]["text"]) & set(task["test"]["text"])


def test_digits_sizes_splits_and_determinism(tmp_path: Path, monkeypatch):
    dsd, card = build_dataset("digits")
    assert sum(card.sizes.values()) == 1797
    assert card.label_names == [str(i) for i in range(10)]
    assert dsd["train"].features["image"].dtype == "uint8"  # stored as uint8
    x = dsd["train"].with_format("numpy", dtype=np.uint8)[:4]["image"]
    assert x.dtype == np.uint8
    assert x.shape == (4, 8, 8)
    assert x.max() <= 255
    keys = [{x.tobytes() for x in dsd[s].with_format("numpy", dtype=np.uint8)[:]["image"]}
            for s in SPLITS]  # fmt: skip
    assert sum(map(len, keys)) == 1797  # no image in two splits
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "second"))
    again = load_dataset("digits")
    assert again["test"]["label"] == dsd["test"]["label"]


def test_fashion_mnist_missing_gives_install_hint(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MODULAREVO_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        build_dataset("fashion-mnist", limit=10)


@pytest.mark.slow
def test_mnist_and_fashion_mnist_limited():
    dsd, card = build_dataset("mnist", limit=50)
    assert card.sizes == {"train": 50, "validation": 50, "test": 50}
    assert dsd["train"].with_format("numpy")[:]["image"].shape == (50, 28, 28)
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    fashion, fcard = build_dataset("fashion-mnist", limit=30)
    assert fcard.label_names[0] == "t-shirt/top"
    assert len(fashion["test"]) == 30


@pytest.mark.slow
def test_law_and_legal_category():
    task, card = build_dataset("legal-category")
    assert task["train"].features["label"].names == list(LEGAL_CATEGORIES)
    assert len(card.label_counts["train"]) == len(LEGAL_CATEGORIES) >= 8
    assert max(card.label_counts["train"].values()) == 600
    _disjoint(task)
    corpus, _ = build_dataset("law")
    assert not set(corpus["train"]["text"]) & set(task["test"]["text"])
