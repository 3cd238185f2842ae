"""Run metadata written beside every output: versions, git SHA, seed, time."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("modularevo", "torch", "transformers", "safetensors", "accelerate", "datasets", "peft")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide results."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_sha(path: str | Path | None = None) -> str | None:
    """The git commit of the source tree, when it is a checkout."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def run_info(seed: int | None = None) -> dict[str, Any]:
    """A dict of what reproduces a run: versions, git SHA, Python, seed, UTC time."""
    return {
        "versions": package_versions(),
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "seed": seed,
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
