"""User input: local files, Hub ids offline, and every bad-input error (all InputError)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import datasets
import pytest

from modularevo.data import UnknownDatasetError, load_dataset
from modularevo.errors import InputError


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n: int) -> list[dict]:
    return [{"sentence": f"example number {i}", "y": ["pos", "neg"][i % 2]} for i in range(n)]


def test_single_jsonl_is_hash_split_with_classlabel(tmp_path: Path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(200))
    dsd = load_dataset(path, text_column="sentence", label_column="y")
    assert set(dsd) == {"train", "validation", "test"}
    assert sum(len(d) for d in dsd.values()) == 200
    assert dsd["train"].features["label"] == datasets.ClassLabel(names=["neg", "pos"])
    texts = [set(dsd[s]["text"]) for s in dsd]
    assert not texts[0] & texts[1]
    assert not texts[0] & texts[2]
    again = load_dataset(path, text_column="sentence", label_column="y")
    assert again["test"]["text"] == dsd["test"]["text"]  # deterministic


def test_csv_parquet_and_text_files(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(60)
    csv = tmp_path / "d.csv"
    csv.write_text("sentence,y\n" + "".join(f"{r['sentence']},{r['y']}\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("\n".join(r["sentence"] for r in rows) + "\n")
    a = load_dataset(csv, text_column="sentence", label_column="y")
    b = load_dataset(tmp_path / "d.parquet", text_column="sentence", label_column="y")
    c = load_dataset(tmp_path / "d.txt")
    assert a["train"]["text"] == b["train"]["text"] == c["train"]["text"]
    assert a["train"]["label"] == b["train"]["label"]
    assert c["train"].column_names == ["text"]


def test_split_folder_keeps_its_splits(tmp_path: Path):
    for name, n in (("train", 10), ("dev", 4), ("test", 3)):
        _write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name} {i}", "label": i % 2}
                                                   for i in range(n)])  # fmt: skip
    dsd = load_dataset(tmp_path, max_examples_per_split=5)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [5, 4, 3]
    assert dsd["train"].features["label"].names == ["0", "1"]


def test_missing_text_column_names_found_columns(tmp_path: Path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(20))
    with pytest.raises(InputError, match=r"no text column 'text'.*sentence.*text_column"):
        load_dataset(path)


def test_missing_label_column(tmp_path: Path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(50))
    with pytest.raises(InputError, match=r"no label column 'label'.*\['sentence', 'y'\]"):
        load_dataset(path, text_column="sentence", label_column="label")


def test_empty_split_is_reported(tmp_path: Path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}])
    _write_jsonl(tmp_path / "validation.jsonl", [{"text": "b", "label": "x"}])
    (tmp_path / "test.csv").write_text("text,label\n")
    with pytest.raises(InputError, match=r"test split .* is empty"):
        load_dataset(tmp_path)


def test_label_outside_label_set(tmp_path: Path):
    _write_jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    )
    _write_jsonl(tmp_path / "validation.jsonl", [{"text": "c", "label": "x"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"text": "d", "label": "z"}])
    with pytest.raises(InputError, match=r"test split .* label\(s\) \['z'\] outside .*label_names"):
        load_dataset(tmp_path)
    dsd = load_dataset(tmp_path, label_names=["x", "y", "z"])  # the fix works
    assert dsd["test"]["label"] == [2]


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownDatasetError, match="Did you mean 'math'") as info:
        load_dataset("maths")
    assert isinstance(info.value, InputError)
    assert "lang-id" in str(info.value)


def test_unknown_option_and_columns_on_registered_name():
    with pytest.raises(InputError, match="no option"):
        load_dataset("math-type", per_class=3)
    with pytest.raises(InputError, match="fixed columns"):
        load_dataset("math-type", text_column="question")


def test_hub_id_offline_is_one_clear_sentence():
    with pytest.raises(InputError, match=r"offline.*train.jsonl.*folder") as info:
        load_dataset("glue/sst2")
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.jsonl"))


def test_cli_user_error_exits_2_without_traceback(monkeypatch, capsys):
    from modularevo.cli.main import main

    monkeypatch.setattr(sys, "argv", ["modularevo", "data", "show", "mathh"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err
    assert "Traceback" not in err


def test_build_options_rejected_for_files(tmp_path: Path):
    path = _write_jsonl(tmp_path / "d.jsonl", _rows(30))
    with pytest.raises(InputError, match="only apply to registered datasets"):
        load_dataset(path, text_column="sentence", per_topic=3)


def test_cli_show_local_file_prints_card_and_samples(tmp_path: Path):
    from typer.testing import CliRunner

    from modularevo.cli.data import app

    path = _write_jsonl(tmp_path / "d.jsonl", _rows(40))
    args = ["show", str(path), "--text-column", "sentence", "--label-column", "y", "-n", "2"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "data card" in result.output
    assert "neg, pos" in result.output
    assert "train[1]" in result.output
