"""Fixtures of the EMoE tests: a batch of token ids; an offline, temporary cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture
def ids() -> torch.Tensor:
    """A (2, 7) batch of token ids."""
    return torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
