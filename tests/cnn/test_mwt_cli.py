"""``modularevo mwt train`` → ``extract`` → ``eval`` through the CLI, on a tiny model."""

import json
import sys
from pathlib import Path

import pytest

from modularevo.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["modularevo", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, " ".join((cap.out + cap.err).split())  # rich wraps long lines


def test_train_extract_eval_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, mod = tmp_path / "run", tmp_path / "mod"
    args = ["mwt", "train", "--data", "digits", str(run), "model=test_resnet", "max_steps=2",
            "batch_size=32", "progress=false"]  # fmt: skip
    code, text = _run(args, capsys)
    assert code == 0, text
    assert (run / "model.safetensors").is_file()
    code, text = _run(["mwt", "extract", str(run), "--classes", "0,1,2", str(mod)], capsys)
    assert code == 0, text
    assert "KRR" in text
    report = json.loads((mod / "module.json").read_text())
    code, text = _run(["mwt", "eval", str(mod)], capsys)
    assert code == 0, text
    shown = json.loads(text)
    assert shown["test_acc"] == report["test_acc"]
    assert shown["classes"] == [0, 1, 2]


def test_cli_errors_are_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _run(["mwt", "train", str(tmp_path / "r"), "epochs=0", "--dry-run"], capsys)
    assert code == 2
    assert "epochs" in text
    assert "Traceback" not in text
    code, text = _run(["mwt", "extract", str(tmp_path), "--classes", "0", str(tmp_path / "m")],
                      capsys)  # fmt: skip
    assert code == 2
    assert "not an MwT run folder" in text
    code, text = _run(["mwt", "train", str(tmp_path / "r"), "--dry-run", "alpha=2"], capsys)
    assert code == 0, text
    assert '"alpha":2.0' in text.replace(" ", "")
