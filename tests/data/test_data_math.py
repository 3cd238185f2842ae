"""math-type / math: sizes, labels, disjoint and deterministic splits, no leakage."""

from __future__ import annotations

from pathlib import Path

import pytest

from modularevo.data import build_dataset, load_dataset
from modularevo.data.math import MATH_TOPICS


def _texts(dsd, split):
    return set(dsd[split]["text"])


def test_math_type_small_build_has_25_balanced_classes():
    dsd, card = build_dataset("math-type", per_topic=40)
    names = dsd["train"].features["label"].names
    assert names == list(MATH_TOPICS)
    assert len(names) == 25
    assert set(card.label_counts["train"]) == set(MATH_TOPICS)  # every topic in train
    assert card.domain == "math"
    assert card.kind == "task"
    assert sum(card.sizes.values()) <= 25 * 40
    assert card.sizes == {s: len(dsd[s]) for s in ("train", "validation", "test")}
    assert all(0 <= y < 25 for y in dsd["test"]["label"])


def test_math_type_splits_disjoint_and_deterministic(tmp_path: Path, monkeypatch):
    first, _ = build_dataset("math-type", per_topic=30)
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "other"))
    second, _ = build_dataset("math-type", per_topic=30)
    for split in ("train", "validation", "test"):
        assert first[split]["text"] == second[split]["text"]
        assert first[split]["label"] == second[split]["label"]
    tr, va, te = (_texts(first, s) for s in ("train", "validation", "test"))
    assert not tr & va
    assert not tr & te
    assert not va & te


def test_cache_is_reused_and_card_written():
    _, card = build_dataset("math-type", per_topic=20)
    folders = list(Path(__import__("os").environ["MODULAREVO_CACHE"], "datasets").iterdir())
    assert len(folders) == 1
    assert (folders[0] / "card.json").exists()
    _, again = build_dataset("math-type", per_topic=20)
    assert again.build_seconds == card.build_seconds  # loaded, not rebuilt


def test_max_examples_per_split():
    dsd = load_dataset("math-type", max_examples_per_split=7, per_topic=20)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [7, 7, 7]


@pytest.mark.slow
def test_math_corpus_small_build_and_no_leak_into_task_test():
    corpus, card = build_dataset("math", dm_per_type=3, mg_per_topic=60)
    task, _ = build_dataset("math-type", per_topic=60)
    assert corpus.column_names["train"] == ["text"]
    assert card.kind == "corpus"
    assert card.sizes["train"] > card.sizes["test"] > 0
    assert not _texts(corpus, "train") & _texts(task, "test")
    again, _ = build_dataset("math", dm_per_type=3, mg_per_topic=60, rebuild=True)
    assert again["train"]["text"] == corpus["train"]["text"]  # DM generation is reproducible
