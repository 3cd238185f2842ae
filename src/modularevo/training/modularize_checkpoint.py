"""Resumable, safe checkpoints of a modularization run.

A checkpoint holds tensors, numbers and strings only, so it is read back with
``torch.load(weights_only=True)`` (no arbitrary pickle). It stores every random
state a step consumes (Python, NumPy, torch CPU and CUDA: dropout draws from torch's
global generator), so a killed run resumes bit-exactly, and the resolved config, so a
resume with different settings is refused with the differing keys named.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modularevo.errors import InputError
from modularevo.utils.atomic import atomic_write_bytes

__all__ = ["config_diff", "load_checkpoint", "restore_rng", "rng_state", "save_checkpoint"]

# Keys that do not change what is learned: a resume may change them.
RESUMABLE_KEYS = frozenset({"progress", "checkpoint_every", "output_dir", "eval_every", "tracker"})


def rng_state() -> dict[str, Any]:
    """Every global random state, as plain tensors and numbers."""
    version, mt, gauss = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_diff(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two resolved configs (nested keys dotted)."""
    out: list[str] = []
    for k in sorted(set(stored) | set(current)):
        if k in RESUMABLE_KEYS:
            continue
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in config_diff(a, b)]
        elif a != b:
            out.append(k)
    return out


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None when there is none), checked against ``config``.

    Raises:
        InputError: if the file cannot be read with ``weights_only=True`` (refused, never
            run) or the checkpoint was written with another resolved config.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a planted pickle or a foreign file: refused, never run
        raise InputError(
            f"{str(path)!r} is not a modularize checkpoint that can be read safely "
            f"({type(exc).__name__}); delete it or use a new output_dir"
        ) from None
    diff = config_diff(state.get("config", {}), config)
    if diff:
        shown = ", ".join(f"{k} ({_get(state['config'], k)!r} -> {_get(config, k)!r})"
                          for k in diff[:6])  # fmt: skip
        raise InputError(
            f"{str(path)!r} was written with another config: {shown}. Resume with the same "
            "settings, or use a new output_dir (or delete the checkpoint) to start over"
        )
    return state


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur
