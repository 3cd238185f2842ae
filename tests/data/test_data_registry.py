"""Registry, cards, split helpers and the data CLI listing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modularevo.data import DATASETS, DataCard
from modularevo.data.splits import balance, chunk_paragraphs, dedupe, split_of

CORPORA = {"math", "law", "multilingual", "code"}
TASKS = {"math-type": "math", "legal-category": "law", "lang-id": "multilingual",
         "code-package": "code"}  # fmt: skip
IMAGES = {"digits", "mnist", "fashion-mnist"}


def test_registry_has_every_dataset_with_its_kind_and_domain():
    assert set(DATASETS.names()) >= CORPORA | set(TASKS) | IMAGES
    for name in CORPORA:
        assert DATASETS.get(name).kind == "corpus"
        assert DATASETS.get(name).domain == name
    for name, domain in TASKS.items():
        spec = DATASETS.get(name)
        assert spec.kind == "task"
        assert spec.domain == domain  # the task names its corpus
        assert spec.train_per_class
        assert spec.label_names
    for name in IMAGES:
        assert DATASETS.get(name).kind == "images"
    assert len(DATASETS.get("math-type").label_names or ()) >= 20
    assert len(DATASETS.get("legal-category").label_names or ()) >= 8
    assert len(DATASETS.get("lang-id").label_names or ()) >= 6
    assert len(DATASETS.get("code-package").label_names or ()) >= 10


def test_split_of_is_stable_and_follows_fractions():
    names = [split_of("salt", str(i), (0.8, 0.1, 0.1)) for i in range(5000)]
    assert names == [split_of("salt", str(i), (0.8, 0.1, 0.1)) for i in range(5000)]
    assert 0.77 < names.count("train") / 5000 < 0.83
    assert 0.08 < names.count("test") / 5000 < 0.12
    assert names != [split_of("other", str(i), (0.8, 0.1, 0.1)) for i in range(5000)]


def test_dedupe_drops_repeats_and_label_conflicts():
    rows = [{"text": "a", "label": 1}, {"text": "a", "label": 1}, {"text": "b", "label": 1},
            {"text": "b", "label": 2}, {"text": "c", "label": 3}]  # fmt: skip
    assert [r["text"] for r in dedupe(rows)] == ["a", "c"]


def test_balance_caps_each_class_in_order():
    rows = [{"text": str(i), "label": i % 3 == 0} for i in range(9)]
    kept = balance(rows, per_class=2)
    assert [r["text"] for r in kept] == ["0", "1", "2", "3"]
    assert balance(rows, per_class=None) is rows


def test_chunk_paragraphs_merges_short_and_cuts_long():
    text = "Short.\n\nAlso short.\n\n" + "word " * 400
    chunks = chunk_paragraphs(text, min_chars=15, max_chars=300)
    assert chunks[0] == "Short.\n\nAlso short."
    assert all(len(c) <= 300 for c in chunks)
    assert " ".join(chunks[1:]).split() == ["word"] * 400


def test_card_round_trip(tmp_path: Path):
    card = DataCard(name="x", kind="task", domain="math", sizes={"train": 3}, label_names=["a"])
    card.save(tmp_path)
    assert DataCard.load(tmp_path) == card


@pytest.mark.usefixtures("_tmp_cache")
def test_cli_ls_lists_all_datasets_unbuilt():
    from modularevo.cli.data import app

    result = CliRunner().invoke(app, ["ls"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in CORPORA | set(TASKS) | IMAGES:
        assert name in result.output
    assert "not built" in result.output
