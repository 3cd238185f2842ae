"""Every user error through the CLI: exit 2, one plain line naming the culprit and the fix,
found before any weight is read, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_message, lock_held_elsewhere

REPO = Path(__file__).parents[2]
TINY = str(REPO / "configs" / "finetune" / "tiny_test.yaml")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(n: int = 60, text: str = "text", label: str | None = "label") -> list[dict]:
    out = []
    for i in range(n):
        row = {text: f"w{i % 7} w{i % 3} w{i % 5}"}
        if label:
            row[label] = ["a", "b"][i % 2]
        out.append(row)
    return out


def _finetune(run_cli, tmp_path, *extra):
    out = tmp_path / "ft"
    code, text = run_cli(["finetune", TINY, f"output_dir={out}", "progress=false", *extra])
    return code, text, out


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ("no label column", "label_column=")),
        ("", ("holds no rows",)),
        ('{"text": "a", "label": "x"}\n{"text": "b", label: }\n', ("line 2", "not valid JSON")),
        ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n', ("split", "is empty")),
        ('["a", "b"]\n', ("row 1", "not an object")),
    ],
    ids=["no-label-column", "empty-file", "malformed-line", "empty-split", "not-objects"],
)
def test_bad_data_files(run_cli, tmp_path, content, needles):
    data = tmp_path / "data.jsonl"
    if content is None:
        _jsonl(data, _rows(label=None))
    else:
        data.write_text(content)
    code, text, out = _finetune(run_cli, tmp_path, f"task={data}")
    assert_one_message(code, text, *needles)
    assert not out.exists()


def test_text_and_label_columns_are_accepted_where_messages_promise_them(run_cli, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", _rows(text="sentence", label="y"))
    code, text, _ = _finetune(run_cli, tmp_path, f"task={data}")
    assert_one_message(code, text, "text_column=")
    code, text, _ = _finetune(
        run_cli, tmp_path, f"task={data}", "text_column=sentence", "label_column=y",
        "label_names=[b, a]", "--dry-run",
    )  # fmt: skip
    assert code == 0, text
    assert json.loads(text)["label_names"] == ["b", "a"]


def test_unknown_keys_get_did_you_mean_not_ls(run_cli, tmp_path):
    code, text, _ = _finetune(run_cli, tmp_path, "stratgy=full", "lora.rr=4", "--dry-run")
    assert_one_message(code, text, "did you mean 'strategy'", "lora.rr", "did you mean 'r'")
    assert "modularevo ls" not in text


def test_yaml_numbers_as_users_mean_them(run_cli, tmp_path):
    code, text, _ = _finetune(run_cli, tmp_path, "lr=1e-4", "--dry-run")
    assert code == 0, text
    assert json.loads(text)["lr"] == 1e-4


def test_misspelt_dataset_fails_the_dry_run(run_cli, tmp_path):
    code, text, out = _finetune(run_cli, tmp_path, "task=lang-idd", "--dry-run")
    assert_one_message(code, text, "'lang-idd'", "Did you mean 'lang-id'")
    assert not out.exists()


def test_misspelt_model_fails_the_dry_run(run_cli, tmp_path):
    code, text, _ = _finetune(run_cli, tmp_path, "model=tiny-brt", "--dry-run")
    assert_one_message(code, text, "'tiny-brt'", "tiny-bert")


def test_missing_module_says_to_run_modularize_first(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    code, text = run_cli(["finetune", "configs/finetune/minilm_lang-id_module.yaml"])
    assert_one_message(
        code, text, "module-0.25.safetensors", "does not exist",
        "modularevo modularize configs/modularize/minilm_multilingual.yaml",
    )  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]


def test_evaluate_with_a_head_of_another_task(run_cli, tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    save_file({"weight": torch.zeros(5, 16), "bias": torch.zeros(5)},
              str(run / "model" / "classifier_head.safetensors"))  # fmt: skip
    (run / "config.resolved.yaml").write_text("task: lang-id\n")
    data = _jsonl(tmp_path / "two.jsonl", _rows())
    code, text = run_cli(["evaluate", str(run / "model"), str(data)])
    assert_one_message(code, text, "head for 5 labels", "'lang-id'", "has 2")


def test_cost_takes_the_config_as_an_argument(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["cost", str(REPO / "configs" / "cost" / "minilm_math-type.yaml")])
    assert_one_message(code, text, "does not exist", "benchmarks/bench_deploy.py")
    code, text = run_cli(["cost"])
    assert_one_message(code, text, "no config given")


def test_missing_config_file(run_cli, tmp_path):
    code, text = run_cli(["finetune", str(tmp_path / "nope.yaml")])
    assert_one_message(code, text, "nope.yaml", "does not exist")


def test_a_running_evolve_holds_its_folder(run_cli, tmp_path):
    out = tmp_path / "evo"
    cfg = str(REPO / "configs" / "evolve" / "tiny_test.yaml")
    with lock_held_elsewhere(out) as pid:
        code, text = run_cli(["evolve", cfg, f"output_dir={out}"])
    assert_one_message(code, text, "being written by another run", str(pid))
    assert not out.exists()


def test_evaluate_takes_the_columns_its_messages_name(run_cli, tmp_path):
    (tmp_path / "model").mkdir()
    save_file({"weight": torch.zeros(5, 16), "bias": torch.zeros(5)},
              str(tmp_path / "model" / "classifier_head.safetensors"))  # fmt: skip
    data = _jsonl(tmp_path / "d.jsonl", _rows(text="sentence", label="y"))
    code, text = run_cli(["evaluate", str(tmp_path / "model"), str(data)])
    assert_one_message(code, text, "text_column=")
    code, text = run_cli(["evaluate", str(tmp_path / "model"), str(data),
                          "--text-column", "sentence", "--label-column", "y"])  # fmt: skip
    assert_one_message(code, text, "head for 5 labels", "has 2")


def test_misspelt_dataset_fails_the_modularize_dry_run(run_cli, tmp_path):
    cfg = str(REPO / "configs" / "modularize" / "tiny_test.yaml")
    code, text = run_cli(["modularize", cfg, "dataset=mathh", f"output_dir={tmp_path / 'm'}",
                          "--dry-run"])  # fmt: skip
    assert_one_message(code, text, "'mathh'", "Did you mean 'math'")
    assert not (tmp_path / "m").exists()
