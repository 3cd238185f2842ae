"""Tiny in-memory tasks, corpora and a fake-fast EvolveConfig for the evolution tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import torch

from modularevo.evolution.config import EvolveConfig

torch.set_num_threads(1)

_GROUPS = {"ta": ["ab", "cd", "ef"], "tb": ["gh", "ij"], "tc": ["kl", "mn"]}


def tiny_task(
    name: str, *, n_train: int = 64, n_eval: int = 24, seed: int = 0
) -> datasets.DatasetDict:
    """Texts of 4-8 two-letter words; the label is the letter pair that dominates."""
    groups = _GROUPS[name]
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> datasets.Dataset:
        texts, labels = [], []
        for _ in range(n):
            label = int(torch.randint(len(groups), (1,), generator=g))
            words = []
            for _ in range(int(torch.randint(4, 9, (1,), generator=g))):
                pick = (
                    label
                    if float(torch.rand(1, generator=g)) < 0.75
                    else int(torch.randint(len(groups), (1,), generator=g))
                )
                words.append(groups[pick])
            texts.append(" ".join(words))
            labels.append(label)
        feats = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=groups)}
        )
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)

    return datasets.DatasetDict(
        {"train": split(n_train), "validation": split(n_eval), "test": split(n_eval)}
    )


def tiny_corpus(letters: str, n: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """Random texts over ``letters`` for modularization."""
    g = torch.Generator().manual_seed(seed)

    def text() -> str:
        idx = torch.randint(len(letters), (60,), generator=g).tolist()
        return " ".join(letters[i] * 2 for i in idx)

    return {"train": [text() for _ in range(n)], "validation": [text() for _ in range(8)]}


def tiny_inputs() -> tuple[dict[str, Any], dict[str, Any]]:
    """(datasets, texts) for :func:`modularevo.evolution.evolve`."""
    data = {"ta": tiny_task("ta", seed=1), "tb": tiny_task("tb", seed=2)}
    data["tc"] = tiny_task("tc", seed=5)  # for retention_tasks
    texts = {"da": tiny_corpus("abcdef", seed=3), "db": tiny_corpus("ghij", seed=4)}
    return data, texts


def fake_config(out: Path, **over: Any) -> EvolveConfig:
    """2 rounds x 2 tasks on tiny-bert, every step a few optimizer updates."""
    data: dict[str, Any] = {
        "model": "tiny-bert",
        "tasks": ["ta", "tb"],
        "domains": {"ta": "da", "tb": "db"},
        "rounds": 2,
        "strategies": ["base", "single_task", "modularevo", "ft_task_arithmetic", "ft_ties"],
        "modularize": {
            "steps": 40,
            "lr": 0.1,
            "batch_size": 4,
            "max_length": 32,
            "max_val_texts": 4,
            "extra": {"eval_every": 20, "eval_batches": 1},
        },
        "finetune": {
            "max_steps": 4,
            "batch_size": 8,
            "max_length": 32,
            "eval_every": 2,
            "lr": 1e-3,
        },
        "search": {"lambdas": [0.5, 1.0], "densities": [0.5], "refine_passes": 1},
        "max_eval_examples": 24,
        "max_search_examples": 12,
        "probe_steps": 10,
        "jobs": 1,
        "output_dir": str(out),
        "progress": False,
        "plots": True,
        "cpu": True,
    }
    data.update(over)
    return EvolveConfig.model_validate(data)
