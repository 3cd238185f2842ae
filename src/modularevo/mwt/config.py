"""Typed, frozen config of an MwT run (``modularevo mwt train``).

Defaults follow MwT (https://arxiv.org/abs/2306.09376): ``alpha = 0.5`` weighs the cohesion
loss, ``beta = 1.5`` the coupling loss, SGD with Nesterov momentum 0.9, lr 0.05, cosine decay,
and a module keeps a kernel when at least ``threshold = 0.9`` of a class's samples use it.

Example:
    >>> cfg = load_mwt_config(None, ["epochs=2", "model=test_vgg"])
    >>> cfg.epochs, cfg.alpha
    (2, 0.5)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modularevo.config.load import apply_overrides, load_yaml, validate
from modularevo.mwt.models import CNN_MODELS


class MwTConfig(BaseModel):
    """Everything one MwT training run needs; validated once, frozen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("vgg_small", description="registered CNN (modularevo.mwt.CNN_MODELS)")
    data: str = Field("digits", description="image set: digits, mnist, fashion-mnist")
    max_train_examples: int | None = Field(
        None, ge=1, description="use only the first N training images (a seeded random order)"
    )
    max_eval_examples: int | None = Field(
        None, ge=1, description="cap on validation/test images evaluated"
    )
    alpha: float = Field(0.5, ge=0, description="weight of the cohesion loss (1 - same-class cos)")
    beta: float = Field(1.5, ge=0, description="weight of the coupling loss (cross-class cos)")
    threshold: float = Field(
        0.9, gt=0, le=1, description="module keeps a kernel used by >= this fraction of a class"
    )
    epochs: int = Field(10, ge=1, description="passes over the training split")
    max_steps: int | None = Field(None, ge=1, description="stop after this many updates")
    batch_size: int = Field(128, ge=2, description="images per step (>= 2 so pairs exist)")
    lr: float = Field(0.05, gt=0, description="SGD learning rate of the CNN and its gates")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads (None: torch's default); 1 on a busy machine"
    )
    progress: bool = Field(True, description="show a tqdm progress bar")
    tracker: Literal["tensorboard", "none"] = Field(
        "tensorboard",
        description="training curves through Accelerate's TensorBoard tracker (offline); "
        "`none` turns it off (curves.png is written either way)",
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v not in CNN_MODELS:
            raise ValueError(CNN_MODELS.unknown_message(v))
        return v


def load_mwt_config(path: str | Path | None, overrides: list[str] | None = None) -> MwTConfig:
    """Load an MwT config from YAML (or the defaults when ``path`` is None) plus overrides.

    Args:
        path: a YAML mapping of :class:`MwTConfig` keys, or None.
        overrides: dotted ``key=value`` strings, e.g. ``["alpha=1.0", "epochs=3"]``.

    Raises:
        ConfigError: listing every invalid key or value at once.
    """
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate(MwTConfig, data, source=str(path) if path else "overrides")
