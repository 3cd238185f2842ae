"""Config of ``modularevo cost``: which models to compare and on what grid."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class CostConfig(BaseModel, frozen=True, extra="forbid"):
    """Dense model vs module, measured side by side in one run.

    Attributes:
        model: the dense model: a local HF folder (or a name ``models.load`` knows).
        module: a module file (``.safetensors``: extracted when structured, run
            sparse otherwise) or an extracted HF folder; ``None`` measures the dense
            model alone.
        kind: how to load ``model`` (``classifier``, ``encoder``, ``causal_lm`` ...).
        num_labels: classes, for ``kind: classifier``.
        batch_sizes, seq_lens: the grid measured.
        repeats, warmup: timed and untimed runs per point.
        threads: CPU threads during timing (``None``: torch's default).
        sparse_layout: layout of the sparse path for unstructured modules.
        out: output folder for ``cost.json``, ``cost.png`` and the table.
    """

    model: str
    module: str | None = None
    kind: str = "classifier"
    num_labels: int | None = Field(2, ge=1)
    batch_sizes: tuple[int, ...] = (1, 8)
    seq_lens: tuple[int, ...] = (64, 128)
    repeats: int = Field(10, ge=1)
    warmup: int = Field(2, ge=0)
    threads: int | None = Field(None, ge=1)
    sparse_layout: Literal["csr", "bsr"] = "csr"
    out: str = "runs/cost"

    @field_validator("batch_sizes", "seq_lens")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(x < 1 for x in v):
            raise ValueError(f"needs at least one value, all >= 1; got {list(v)}")
        return v
