"""Typed config of one modularization run (``modularevo modularize``).

Example:
    >>> cfg = ModularizeConfig(model="tiny-bert", kind="masked_lm", dataset="math")
    >>> cfg.snapshot_levels
    (0.75, 0.5, 0.25)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LMKind = Literal["causal_lm", "masked_lm", "seq2seq"]


class ModularizeConfig(BaseModel):
    """Everything one mask-learning run needs; validated once, frozen.

    The loss is the domain's language-modelling loss plus ``alpha`` times the mean of
    the binary mask over all covered entries. Scores start uniform in
    ``[init_low, init_high)``: with a strong enough push, the kept fraction falls
    roughly by ``lr / (init_high - init_low)`` per step, so the width of the init and
    ``lr`` set how many steps it takes to reach a level.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("minilm", description="embedded short name, local folder or Hub name")
    kind: LMKind = Field("masked_lm", description="LM objective: causal_lm, masked_lm, seq2seq")
    dataset: str = Field("math", description="domain corpus (registered name or local file)")
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    max_train_texts: int | None = Field(None, ge=1, description="cap on train texts read")
    max_val_texts: int = Field(512, ge=1, description="cap on validation texts read")
    alpha: float = Field(100.0, ge=0, description="weight of the kept-fraction penalty")
    lr: float = Field(0.01, gt=0, description="AdamW learning rate of the scores")
    lr_head: float = Field(5e-4, gt=0, description="learning rate of a trained LM head")
    train_head: bool | None = Field(
        None, description="train the LM head with the masks; None: when the checkpoint lacks it"
    )
    head_warmup_steps: int = Field(0, ge=0, description="dense head-only steps before masking")
    init_low: float = Field(0.0, description="scores start uniform in [init_low, init_high)")
    init_high: float = Field(1.0, description="upper end of the score init")
    steps: int = Field(300, ge=1, description="mask-learning steps (optimizer updates)")
    batch_size: int = Field(8, ge=1, description="global batch size (sequences)")
    max_length: int = Field(128, ge=8, description="tokens per packed sequence")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    snapshot_levels: tuple[float, ...] = Field((0.75, 0.5, 0.25))
    stop_after_last_level: bool = Field(
        True, description="stop once the lowest snapshot level is crossed"
    )
    structured: bool = Field(False, description="mask whole FFN neurons and attention heads")
    mask_bias: bool = Field(True, description="unstructured: cover the biases of masked layers")
    eval_every: int = Field(50, ge=1, description="steps between validation losses")
    eval_batches: int = Field(8, ge=1, description="validation batches per evaluation")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    seed: int = 0
    output_dir: Path = Field(Path("runs/modularize"), description="where modules are written")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("snapshot_levels")
    @classmethod
    def _levels(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("give at least one level, e.g. [0.75, 0.5, 0.25]")
        if any(not 0 < x < 1 for x in v):
            raise ValueError(f"levels must lie strictly between 0 and 1, got {list(v)}")
        return tuple(sorted(set(v), reverse=True))

    @model_validator(mode="after")
    def _init_range(self) -> ModularizeConfig:
        if self.init_high <= self.init_low:
            raise ValueError(
                f"init_high ({self.init_high}) must be greater than init_low ({self.init_low})"
            )
        return self
