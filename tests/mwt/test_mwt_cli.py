"""``modularevo mwt train`` → ``extract`` → ``eval`` through the CLI, on a tiny model."""

import json
from pathlib import Path


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_train_extract_eval_round_trip(tmp_path: Path, run_cli) -> None:
    run, mod = tmp_path / "run", tmp_path / "mod"
    args = ["mwt", "train", "--data", "digits", str(run), "model=test_resnet", "max_steps=2",
            "batch_size=32", "progress=false"]  # fmt: skip
    code, text = run_cli(args)
    assert code == 0, text
    assert (run / "model.safetensors").is_file()
    code, text = run_cli(["mwt", "extract", str(run), "--classes", "0,1,2", str(mod)])
    assert code == 0, text
    assert "KRR" in text
    report = json.loads((mod / "module.json").read_text())
    code, text = run_cli(["mwt", "eval", str(mod)])
    assert code == 0, text
    shown = json.loads(_flat(text))
    assert shown["test_acc"] == report["test_acc"]
    assert shown["classes"] == [0, 1, 2]


def test_cli_errors_are_one_clear_message(tmp_path: Path, run_cli) -> None:
    code, text = run_cli(["mwt", "train", str(tmp_path / "r"), "epochs=0", "--dry-run"])
    assert code == 2
    assert "epochs" in _flat(text)
    assert "Traceback" not in text
    code, text = run_cli(["mwt", "extract", str(tmp_path), "--classes", "0", str(tmp_path / "m")])
    assert code == 2
    assert "not an MwT run folder" in _flat(text)
    code, text = run_cli(["mwt", "train", str(tmp_path / "r"), "--dry-run", "alpha=2"])
    assert code == 0, text
    assert '"alpha":2.0' in text.replace(" ", "")
