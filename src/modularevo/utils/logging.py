"""Logging set-up shared by the CLI; library code only calls ``logging.getLogger``."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(verbosity: int = 0) -> None:
    """Route library logs through rich; 0 = warnings, 1 = info, 2+ = debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
