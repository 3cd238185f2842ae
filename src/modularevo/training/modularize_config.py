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


class HeadWarmupConfig(BaseModel):
    """Warm-up of an LM head the checkpoint lacks (MiniLM ships none), on the frozen dense model.

    The head trains until the validation LM loss of the corpus mix plateaus, is cached
    (keyed by base model, corpus mix and these settings) and shared by every domain,
    then stays frozen while masks learn. A checkpoint with a trained head skips it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    corpora: tuple[str, ...] | None = Field(
        default=None, description="corpus mix the head learns on; None: the run's own dataset"
    )
    max_steps: int = Field(default=600, ge=0, description="cap on head steps (0: no warm-up)")
    lr: float = Field(default=1e-3, gt=0, description="AdamW learning rate of the head")
    batch_size: int = Field(default=16, ge=1)
    train_batches: int = Field(
        default=48,
        ge=1,
        description="masked LMs: batches per corpus whose body features are cached",
    )
    eval_every: int = Field(default=25, ge=1, description="steps between validation losses")
    eval_batches: int = Field(default=4, ge=1, description="validation batches per corpus")
    plateau_tol: float = Field(
        default=0.005,
        ge=0,
        description="relative improvement below which an evaluation counts as flat",
    )
    patience: int = Field(
        default=2, ge=1, description="flat evaluations in a row that end the warm-up"
    )
    max_train_texts: int | None = Field(
        default=4000, ge=1, description="cap on train texts per corpus"
    )
    cache_dir: Path = Field(
        default=Path("runs/heads"), description="shared cache of warmed-up heads"
    )


class ModularizeConfig(BaseModel):
    """Everything one mask-learning run needs; validated once, frozen.

    The loss is the domain's language-modelling loss plus ``alpha`` times the mean of
    the binary mask over all covered entries, so every score feels a constant downward
    push ``alpha / N`` (the *pressure*). Scores start uniform in ``[init_low,
    init_high)`` from a seed derived from ``(seed, dataset)``. With ``alpha: null`` the
    pressure is calibrated on the domain before training: it equals the
    ``pressure_quantile`` quantile of the per-score LM-gradient RMS, so that share of
    the weights has an LM gradient larger than the pressure. With ``lr: null`` the peak
    learning rate is chosen so the lowest level is predicted to be crossed after
    ``cross_at`` of the steps (warm-up, the peak held until that level falls, then a
    linear decay to ``final_lr_ratio``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("minilm", description="embedded short name, local folder or Hub name")
    kind: LMKind = Field("masked_lm", description="LM objective: causal_lm, masked_lm, seq2seq")
    dataset: str = Field("math", description="domain corpus (registered name or local file)")
    dataset_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options of the corpus loader; `text_column: col` (also accepted at the "
        "top level) names the text column of a local file",
    )
    max_train_texts: int | None = Field(None, ge=1, description="cap on train texts read")
    max_val_texts: int = Field(512, ge=1, description="cap on validation texts read")
    alpha: float | None = Field(
        None, ge=0, description="weight of the kept-fraction penalty; null: calibrated"
    )
    pressure_quantile: float = Field(
        0.75, gt=0, lt=1, description="calibrated alpha: pressure = this quantile of LM-grad RMS"
    )
    calibration_batches: int = Field(8, ge=1, description="batches of the alpha calibration")
    lr: float | None = Field(None, gt=0, description="peak AdamW lr of the scores; null: planned")
    cross_at: float = Field(
        0.5, gt=0, le=1, description="planned lr: share of steps at which the last level falls"
    )
    alpha_growth: float = Field(
        1.0, ge=1, description="per-step growth of alpha once the planned crossing is late"
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps of lr warm-up")
    final_lr_ratio: float = Field(0.1, ge=0, le=1, description="lr at the last step / peak lr")
    head_warmup: HeadWarmupConfig = Field(default_factory=HeadWarmupConfig)
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
    sampled_softmax: int | None = Field(
        None,
        ge=1,
        description=(
            "causal_lm only: train against a sampled softmax over the batch's target ids plus "
            "this many vocabulary ids drawn uniformly (importance-corrected), so a 262k-way "
            "head does not dominate the step; validation losses stay exact. None: full softmax. "
            "On gemma-270m a 4096-id sample gave a worse, not domain-specific module than the "
            "full softmax at the same steps (docs/models.md): use it for speed checks only"
        ),
    )
    structured: bool = Field(False, description="mask whole FFN neurons and attention heads")
    mask_bias: bool = Field(True, description="unstructured: cover the biases of masked layers")
    eval_every: int = Field(50, ge=1, description="steps between validation losses")
    eval_batches: int = Field(8, ge=1, description="validation batches per evaluation")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    seed: int = 0
    output_dir: Path = Field(Path("runs/modularize"), description="where modules are written")
    progress: bool = Field(True, description="show a progress bar")
    tracker: Literal["tensorboard", "none"] = Field(
        "tensorboard",
        description="training curves through Accelerate's TensorBoard tracker (offline); "
        "`none` turns it off (curves.png is written either way)",
    )

    @model_validator(mode="before")
    @classmethod
    def _text_column(cls, data: Any) -> Any:
        """``text_column: col`` (as the data errors suggest) goes into ``dataset_options``."""
        if isinstance(data, dict) and "text_column" in data:
            data = dict(data)
            column = data.pop("text_column")
            if column is not None:
                data["dataset_options"] = {**data.get("dataset_options", {}), "text_column": column}
        return data

    @field_validator("snapshot_levels")
    @classmethod
    def _levels(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("give at least one level, e.g. [0.75, 0.5, 0.25]")
        if any(not 0 < x < 1 for x in v):
            raise ValueError(f"levels must lie strictly between 0 and 1, got {list(v)}")
        return tuple(sorted(set(v), reverse=True))

    @model_validator(mode="after")
    def _sampled_only_causal(self) -> ModularizeConfig:
        if self.sampled_softmax is not None and self.kind != "causal_lm":
            raise ValueError(
                f"sampled_softmax applies to kind causal_lm only, got kind {self.kind!r}; "
                "masked_lm already projects only the masked positions"
            )
        return self

    @model_validator(mode="after")
    def _init_range(self) -> ModularizeConfig:
        if self.init_high <= self.init_low:
            raise ValueError(
                f"init_high ({self.init_high}) must be greater than init_low ({self.init_low})"
            )
        return self
