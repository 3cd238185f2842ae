"""Run the ``modularevo`` CLI in-process, as a user's shell would."""

from __future__ import annotations

import sys

import pytest

from modularevo.cli.main import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and the combined stdout + stderr of ``modularevo *argv``."""
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
