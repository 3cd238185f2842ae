"""Pickle-free training state: RNG states and scheduler state as JSON + safetensors.

A checkpoint folder must never run code when it is read back, whoever wrote it.
Accelerate unpickles objects registered with ``register_for_checkpointing`` with
``weights_only=False``; this module stores what those objects would have held (the
scheduler's ``state_dict``) and every random state (Python, NumPy, torch CPU and CUDA)
in formats that cannot carry code, so a resumed run is bit-exact without them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modularevo.errors import InputError
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")

SCHEDULER_FILE = "scheduler.json"
UNSAFE_PATTERNS = ("custom_checkpoint_*.pkl",)
"""Files of Accelerate that are unpickled with ``weights_only=False``; never accepted."""


def _rng_paths(folder: Path, rank: int) -> tuple[Path, Path]:
    return folder / f"rng_state_{rank}.json", folder / f"rng_state_{rank}.safetensors"


def save_rng_state(folder: str | Path, rank: int = 0) -> None:
    """Write this process's Python, NumPy and torch random states into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    meta = {
        "python": [version, list(py_state), gauss],
        "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    meta_path, tensor_path = _rng_paths(folder, rank)
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    save_file(tensors, str(tensor_path))


def load_rng_state(folder: str | Path, rank: int = 0) -> None:
    """Restore the random states written by :func:`save_rng_state`.

    Raises:
        InputError: if the files are missing or malformed.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, tensor_path = _rng_paths(folder, rank)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_path))
        version, py_state, gauss = meta["python"]
        name, keys, pos, has_gauss, cached = meta["numpy"]
        random.setstate((version, tuple(py_state), gauss))
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["torch_cpu"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _bad(folder, meta_path.name, exc) from None
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_scheduler_state(folder: str | Path, scheduler: Any) -> None:
    """Write ``scheduler.state_dict()`` as JSON (learning-rate schedulers hold numbers only)."""
    state = scheduler.state_dict()
    (Path(folder) / SCHEDULER_FILE).write_text(json.dumps(state), encoding="utf-8")


def load_scheduler_state(folder: str | Path, scheduler: Any) -> None:
    """Restore a scheduler saved by :func:`save_scheduler_state`.

    Raises:
        InputError: if the file is missing or malformed.
    """
    path = Path(folder) / SCHEDULER_FILE
    try:
        scheduler.load_state_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _bad(Path(folder), SCHEDULER_FILE, exc) from None


def refuse_unsafe(folder: str | Path) -> None:
    """Refuse a checkpoint that holds files only code-running unpickling could read.

    Raises:
        InputError: naming the files.
    """
    folder = Path(folder)
    found = sorted(p.name for pat in UNSAFE_PATTERNS for p in folder.glob(pat))
    if found:
        raise InputError(
            f"checkpoint {str(folder)!r} holds {', '.join(found)}: pickles this version never "
            "loads, because loading them could run code (an older version's checkpoint or a "
            "planted file); nothing was loaded. Delete the folder or set resume=false"
        )


def _bad(folder: Path, name: str, exc: BaseException) -> InputError:
    return InputError(
        f"checkpoint {str(folder)!r} has a missing or malformed {name} ({type(exc).__name__}: "
        f"{exc}); it was written by another version or damaged. Delete the folder or set "
        "resume=false to start over"
    )
