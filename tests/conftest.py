"""Fixtures shared by every test folder."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from modularevo.cli.main import main


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], tuple[int, str]]:
    """Run ``modularevo *argv`` in-process as a shell would; gives (exit code, stdout + stderr)."""

    def run(argv: list[str]) -> tuple[int, str]:
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
        return code, cap.out + cap.err

    return run
