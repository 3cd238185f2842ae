"""A tiny BERT base, two fine-tunes (with a tokenizer) and a recipe writer, in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from finetune_helpers import tiny_classifier, tiny_tokenizer


def tiny_family(root: Path) -> Path:
    """``root/base``, ``root/ft0``, ``root/ft1``: tiny BERT classifiers with a tokenizer."""
    torch.manual_seed(0)
    model = tiny_classifier(num_labels=2)
    tok = tiny_tokenizer()
    for name in ("base", "ft0", "ft1"):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    return root


def recipe(root: Path, *, extra: str = "", lam: str = "1.0", name: str = "recipe.yaml") -> Path:
    """A task-arithmetic recipe over the tiny family; ``extra`` is appended as YAML."""
    path = root / name
    path.write_text(
        f"merge_method: task_arithmetic\nbase_model: {root / 'base'}\nmodels:\n"
        f"  - model: {root / 'ft0'}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {root / 'ft1'}\n    parameters: {{weight: 0.5}}\n"
        f"parameters: {{lambda: {lam}}}\ndtype: float32\n{extra}"
    )
    return path
