"""Tiny llama-shaped model folders for the mergekit-recipe tests, and a merge runner.

The models are 12-layer llama-shaped folders with a config and tokenizer files, small
enough that every merge takes milliseconds. The tests compute expected tensors by hand
from mergekit 0.1.5's definitions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from merge_helpers import read_output
from safetensors.torch import save_file

from modularevo import merge

LAYERS = 12
VOCAB = 16
HIDDEN = 4
Q1, Q10 = "model.layers.1.self_attn.q_proj.weight", "model.layers.10.self_attn.q_proj.weight"
UP = "model.layers.{}.mlp.up_proj.weight"


def llama_tensors(seed: int) -> dict[str, torch.Tensor]:
    """A random state dict of the tiny llama (``LAYERS`` layers, untied head)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(LAYERS):
        pre = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            sd[pre + f"self_attn.{proj}_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g)
        for proj in ("gate", "up"):
            sd[pre + f"mlp.{proj}_proj.weight"] = torch.randn(2 * HIDDEN, HIDDEN, generator=g)
        sd[pre + "mlp.down_proj.weight"] = torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sd[pre + f"{norm}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["lm_head.weight"] = torch.randn(VOCAB, HIDDEN, generator=g)
    return sd


def write_model(folder: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Save ``sd`` as an HF model folder (config and tokenizer files tagged with its name)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 1, "num_key_value_heads": 1, "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "tag": folder.name}))
    return sd


def run_recipe(tmp_path: Path, recipe: dict[str, Any] | str, name: str = "out") -> dict:
    """Merge ``recipe`` (a dict, or YAML text as a user writes it) and read the output."""
    if isinstance(recipe, str):
        path = tmp_path / f"{name}.yaml"
        path.write_text(recipe)
        recipe = str(path)  # type: ignore[assignment]
    merge(recipe, tmp_path / name, progress=False)
    return read_output(tmp_path / name)


def make_zoo(root: Path) -> dict[str, Any]:
    """base, a, b: three models under ``root``; ``paths`` maps each name to its folder."""
    models = {n: write_model(root / n, llama_tensors(i)) for i, n in enumerate(("base", "a", "b"))}
    return {"paths": {n: str(root / n) for n in models}, **models}
