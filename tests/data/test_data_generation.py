"""The generation tasks math-qa and code-name: columns, categories, splits, determinism, leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from modularevo.data import DATASETS, build_dataset
from modularevo.data.code import CODE_PACKAGES, name_prompt
from modularevo.data.math import MATH_QA_TYPES
from modularevo.data.splits import dedupe

SPLITS = ("train", "validation", "test")
GENERATION = {"math-qa": "math", "code-name": "code"}


def _disjoint_questions(dsd) -> None:
    seen = [set(dsd[s]["text"]) for s in SPLITS]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]


def test_generation_tasks_are_registered_with_their_domain():
    for name, domain in GENERATION.items():
        spec = DATASETS.get(name)
        assert spec.kind == "generation"
        assert spec.domain == domain  # tied to the domain's corpus and module
        assert spec.train_per_class
        assert spec.eval_per_class


def test_dedupe_drops_a_question_with_two_answers():
    rows = [
        {"text": "q1", "target": "a", "group": "1"},
        {"text": "q1", "target": "b", "group": "1"},
        {"text": "q2", "target": "a", "group": "2"},
        {"text": "q2", "target": "a", "group": "2"},
    ]
    assert [r["text"] for r in dedupe(rows)] == ["q2"]


def test_math_qa_small_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dsd, card = build_dataset("math-qa", per_type=12)
    assert dsd["train"].column_names == ["text", "target", "category"]
    assert card.kind == "generation"
    assert set(card.label_counts["train"]) <= set(MATH_QA_TYPES)
    assert len(card.label_counts["train"]) >= 15
    assert sum(card.sizes.values()) <= 12 * len(MATH_QA_TYPES)
    assert all(t and "\n" not in t for s in SPLITS for t in dsd[s]["target"])  # one line
    _disjoint_questions(dsd)
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "second"))
    again, _ = build_dataset("math-qa", per_type=12)
    for s in SPLITS:
        assert again[s]["text"] == dsd[s]["text"]
        assert again[s]["target"] == dsd[s]["target"]


def test_name_prompt_hides_the_name_and_keeps_the_summary():
    src = 'def read_config(path, *, strict=True):\n    """Read a config file.\n\n    More."""\n'
    prompt, name = name_prompt(src) or ("", "")
    assert name == "read_config"
    assert prompt == 'def ?(path, *, strict=True):\n    """Read a config file."""'
    assert name_prompt('def _hidden(x):\n    """Private helper here."""') is None
    assert name_prompt("def nodoc(x):\n    return x") is None


def test_code_name_small_build():
    dsd, card = build_dataset("code-name", per_package=30, max_files=3)
    assert card.kind == "generation"
    assert set(card.label_counts["train"]) <= set(CODE_PACKAGES)
    for s in SPLITS:
        for text, target in zip(dsd[s]["text"], dsd[s]["target"], strict=True):
            assert text.startswith(("def ?(", "async def ?("))
            assert target.isidentifier()
            assert not target.startswith("test")
    _disjoint_questions(dsd)


@pytest.mark.slow
def test_generation_test_splits_do_not_leak_from_their_corpora():
    code, _ = build_dataset("code", per_package=4, max_files=2)
    names, _ = build_dataset("code-name", per_package=40, max_files=2)
    train_sources = set(code["train"]["text"])
    for text, target in zip(names["test"]["text"], names["test"]["target"], strict=True):
        doc = text.split('"""')[1].removesuffix(" ...")
        assert not any(f"def {target}(" in src and doc in src for src in train_sources)
    math, _ = build_dataset("math", dm_per_type=4, mg_per_topic=5)
    qa, _ = build_dataset("math-qa", per_type=30)
    pairs = {f"{q}\n{a}" for q, a in zip(qa["test"]["text"], qa["test"]["target"], strict=True)}
    assert not pairs & set(math["train"]["text"])
