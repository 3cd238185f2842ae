"""Progress-bar policy: bars on a terminal, none in logs and pipes.

A bar redrawn into a file leaves carriage returns and cursor-up escapes (``\\x1b[A``) on
every update, which turns a 10-minute run into hundreds of log lines. So:

* the project's own bars pass :func:`bar_disable` to tqdm: off when a config says
  ``progress: false``, else tqdm's ``None`` (shown only when its stream is a terminal);
* :func:`quiet_bars_when_piped` (called once by the CLI) turns off the bars of the
  libraries underneath (transformers' shard writer, datasets' ``map``, the Hub's
  downloads) when stderr is not a terminal.

A run without bars still prints its results at the end (every CLI command does).
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

_LIBRARY_SWITCHES = {
    "TQDM_DISABLE": "1",  # tqdm bars created without an explicit `disable`
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # the Hub's bars and transformers' own
}


def bar_disable(requested: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar the user asked for (``requested``) or turned off.

    Returns:
        ``True`` when not requested; otherwise ``None``, which tqdm reads as "show the
        bar only when the stream is a terminal".
    """
    return None if requested else True


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    if stream is None:  # pythonw and friends
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def quiet_bars_when_piped(stream: TextIO | None = None) -> bool:
    """Turn library progress bars off when ``stream`` is not a terminal.

    Sets environment switches only where the user has not set them, before the libraries
    are imported (they read them at import).

    Returns:
        Whether bars stay on (``stream`` is a terminal).
    """
    if is_terminal(stream):
        return True
    for key, value in _LIBRARY_SWITCHES.items():
        os.environ.setdefault(key, value)
    return False
