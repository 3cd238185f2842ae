"""Seeding and order-independent random streams."""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

import numpy as np

from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (e.g. tensor name, model index).

    The same inputs give the same seed on every machine, whatever the order of work.
    """
    h = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2**63 - 1)


def derived_generator(
    seed: int, *keys: object, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator seeded by :func:`derived_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(seed, *keys))
    return g
