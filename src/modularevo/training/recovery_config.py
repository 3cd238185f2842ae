"""Options of the recovery stages of ``finetune``: learned structured gates and distillation.

Pure schemas (no torch), so configs validate and ``--help`` runs without loading torch; the
training code is in :mod:`~modularevo.training.structured_gates` and
:mod:`~modularevo.training.distill`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DistillConfig", "GatesConfig"]


class GatesConfig(BaseModel):
    """Hard-concrete gates learned during fine-tuning (``finetune`` with ``gates:``).

    Example:
        >>> GatesConfig(ffn_density=0.25, head_density=1 / 3).per_layer
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ffn_density: float = Field(0.25, gt=0, le=1, description="kept fraction of FFN neurons")
    head_density: float = Field(
        1.0 / 3.0, gt=0, le=1, description="kept fraction of attention heads"
    )
    per_layer: bool = Field(
        True, description="the final mask keeps round(density * n) units in every layer"
    )
    lr: float = Field(0.1, gt=0, description="learning rate of the gates' log_alpha")
    lambda_lr: float = Field(0.05, gt=0, description="learning rate of the Lagrange multipliers")
    warmup_fraction: float = Field(
        0.5, ge=0, le=1, description="steps over which the target falls from 1 to the density"
    )
    penalty: float | None = Field(
        50.0, gt=0, description="weight w of w*(d-t)^2; null: learned Lagrange multipliers"
    )
    init_log_alpha: float = Field(3.0, description="initial log_alpha (P(kept) ~ 0.93 at 3)")
    init_module: str | None = Field(
        None, description="a domain module file: the units it drops start at init_drop"
    )
    init_drop: float = Field(-3.0, description="initial log_alpha of units init_module drops")


class DistillConfig(BaseModel):
    """Distillation options (``finetune`` with ``distill:``).

    Example:
        >>> DistillConfig(teacher="runs/ft/minilm-lang-id/model").temperature
        2.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    teacher: str | None = Field(
        None, description="folder of the dense fine-tuned teacher (or pass teacher= in Python)"
    )
    temperature: float = Field(2.0, gt=0)
    ce_weight: float = Field(1.0, ge=0, description="weight of the task cross-entropy")
    kl_weight: float = Field(1.0, ge=0, description="weight of T^2 * KL on the logits")
    hidden_weight: float = Field(1.0, ge=0, description="weight of the hidden-state MSE")
    layers: list[int] | None = Field(
        None, description="blocks whose outputs are matched (same index in both); null: all"
    )
