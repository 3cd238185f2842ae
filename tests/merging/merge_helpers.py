"""Shared helpers of the merge tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def read_output(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a merged HF folder, read through its index with safetensors itself."""
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for shard in set(index["weight_map"].values()):
        out.update(load_file(str(path / shard)))
    return out
