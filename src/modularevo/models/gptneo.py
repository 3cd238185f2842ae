"""The GPT-Neo decoder of the self-pretrained ``gptneo-small`` default: its size and HF config.

The architecture lives here, beside the other embedded models, so the model registry can
count its parameters without importing the pretraining code (``training/pretrain.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_VOCAB_SIZE = 8192
"""Vocabulary of the byte-level BPE tokenizer trained for ``gptneo-small``."""


class GPTNeoArch(BaseModel):
    """Size of the GPT-Neo decoder (defaults: the shipped ``gptneo-small``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hidden_size: int = Field(256, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(1024, gt=0)
    max_position_embeddings: int = Field(256, gt=0)
    window_size: int = Field(128, gt=0)


def gptneo_config(arch: GPTNeoArch, *, vocab_size: int, tokenizer: Any = None) -> Any:
    """The HF ``GPTNeoConfig`` for ``arch``; global and local attention layers alternate."""
    from transformers import GPTNeoConfig  # deferred: heavy import

    pairs, odd = divmod(arch.num_layers, 2)
    types: list[Any] = [[["global", "local"], pairs]] if pairs else []
    if odd:
        types.append([["global"], 1])
    ids: dict[str, Any] = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}  # specials
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    return GPTNeoConfig(
        vocab_size=vocab_size, hidden_size=arch.hidden_size, num_layers=arch.num_layers,
        num_heads=arch.num_heads, intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings, window_size=arch.window_size,
        attention_types=types, **ids,
    )  # fmt: skip
