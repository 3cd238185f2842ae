"""Helpers of the reliability suite: planted pickles, tiny models, one-line error checks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))  # finetune_helpers


class Payload:
    """Unpickling this creates ``marker``: proof that code from a data file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path) -> None:
    """Write a ``torch.save`` file at ``path`` whose loading with ``weights_only=False``
    (or a plain unpickling) creates ``marker``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": Payload(marker)}, path)


def assert_one_message(code: int, text: str, *needles: str) -> None:
    """Exit 2, an ``error:`` message without a traceback, naming every needle."""
    assert code == 2, text
    assert "Traceback" not in text, text
    assert "error:" in text, text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")


@contextlib.contextmanager
def lock_held_elsewhere(out: Path) -> Iterator[int]:
    """Another process holds the output lock of ``out`` for the block; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from modularevo.utils.atomic import claim_output\n"
         f"with claim_output({str(out)!r}):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
