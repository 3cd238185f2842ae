"""The schema of ``modularevo pretrain`` (frozen, validated once; loads no torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from modularevo.models.gptneo import DEFAULT_VOCAB_SIZE, GPTNeoArch


class PretrainConfig(BaseModel):
    """Everything that decides a pretraining run; validated once, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "gptneo-small"
    corpora: list[str] = Field(default_factory=lambda: ["math", "law", "multilingual", "code"])
    max_docs_per_corpus: int | None = Field(20000, gt=0)
    vocab_size: int = Field(DEFAULT_VOCAB_SIZE, ge=300)
    tokenizer_docs: int = Field(20000, gt=0)
    model: GPTNeoArch = Field(default_factory=lambda: GPTNeoArch.model_validate({}))
    seq_len: int = Field(128, gt=1)
    batch_size: int = Field(16, gt=0)
    steps: int = Field(500, gt=0)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(100, gt=0)
    eval_blocks: int = Field(64, gt=0)
    seed: int = 0
    threads: int = Field(2, gt=0)
    max_minutes: float | None = Field(None, gt=0)
    out: str | None = None
    progress: bool = True
