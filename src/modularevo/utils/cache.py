"""Where built datasets and self-trained models are cached.

``$MODULAREVO_CACHE`` if set, else ``~/.cache/modularevo``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (created), optionally a sub-folder of it."""
    root = Path(os.environ.get("MODULAREVO_CACHE", Path.home() / ".cache" / "modularevo"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
