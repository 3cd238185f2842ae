"""A quiet, honest console: usage errors are one line (exit 2), bars stay out of logs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modularevo.utils.progress import bar_disable, is_terminal, quiet_bars_when_piped

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / "configs" / "finetune" / "tiny_test.yaml"


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "HF_HUB_DISABLE_PROGRESS_BARS"):  # fmt: skip
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "modularevo.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["finetune", str(FINETUNE), "--no-such-option"],
        ["merge", "--bogus", "a.yaml", "out"],
        ["evaluate"],  # missing arguments
    ],
)
def test_a_usage_error_is_a_short_message_and_exit_2(argv: list[str]):
    res = _cli(*argv)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "--help`" in lines[0]
    assert f"`modularevo {argv[0]} --help`" in lines[0]


def test_a_user_error_is_one_red_line_and_exit_2(tmp_path: Path):
    res = _cli("finetune", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error:")


def test_bar_policy():
    assert bar_disable(False) is True
    assert bar_disable(True) is None  # tqdm: shown only on a terminal


def test_library_bars_are_turned_off_when_piped(monkeypatch: pytest.MonkeyPatch):
    for key in ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                "HF_HUB_DISABLE_PROGRESS_BARS"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    assert not is_terminal(io.StringIO())
    assert quiet_bars_when_piped(io.StringIO()) is False
    assert os.environ["TQDM_DISABLE"] == "1"
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"


def test_a_terminal_keeps_its_bars(monkeypatch: pytest.MonkeyPatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert quiet_bars_when_piped(Tty()) is True
    assert "TQDM_DISABLE" not in os.environ


def test_the_projects_bars_draw_nothing_into_a_pipe():
    from tqdm.auto import tqdm

    sink = io.StringIO()
    for _ in tqdm(range(50), file=sink, disable=bar_disable(True)):
        pass
    assert sink.getvalue() == ""


@pytest.mark.slow
def test_a_fine_tune_logged_to_a_file_is_a_few_clean_lines(tmp_path: Path):
    # what `modularevo quickstart > log 2>&1` relies on: no bar redraws, the result at the end
    res = _cli("finetune", str(FINETUNE), f"output_dir={tmp_path / 'ft'}", "max_steps=12",
               "eval_every=6", timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout + res.stderr
    assert "\x1b[A" not in text
    assert "\r" not in text
    assert len(text.splitlines()) < 10, text
    assert "val acc" in text
    assert "test acc" in text
    assert (tmp_path / "ft" / "curves.png").is_file()
