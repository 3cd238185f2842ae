"""Typed config of a multi-round evolution run (``modularevo evolve``).

Example:
    >>> cfg = EvolveConfig(model="tiny-bert", tasks=["math-type", "lang-id"], rounds=2)
    >>> cfg.strategies[0], cfg.modularize.density
    ('base', 0.25)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ALL_STRATEGIES = (
    "base",
    "single_task",
    "modularevo",
    "ft_task_arithmetic",
    "ft_ties",
    "ft_dare",
    "ft_cabs",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModularizeOptions(_Frozen):
    """How each domain's module is learned (see :class:`~modularevo.training.modularize_config`)."""

    kind: Literal["auto", "causal_lm", "masked_lm", "seq2seq"] = Field(
        default="auto",
        description="LM objective; auto: masked_lm for encoders, causal_lm for decoders",
    )
    density: float = Field(
        default=0.25, gt=0, lt=1, description="module density used (a snapshot level)"
    )
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=128, ge=8)
    lr: float = Field(default=0.01, gt=0)
    alpha: float = Field(default=100.0, ge=0)
    max_train_texts: int | None = Field(default=None, ge=1)
    max_val_texts: int = Field(default=256, ge=1)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="further ModularizeConfig keys, passed through"
    )


class FinetuneOptions(_Frozen):
    """Per-round fine-tuning of every task (one FinetuneConfig per task and strategy)."""

    lr: float = Field(default=5e-5, gt=0, description="lr of full fine-tuning")
    module_lr: float | None = Field(default=None, gt=0, description="lr inside modules; default lr")
    head_lr: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=16, ge=1)
    max_length: int = Field(default=128, ge=8)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    eval_every: int = Field(
        default=50, ge=1, description="validation checks for best-step selection"
    )
    patience: int | None = Field(default=None, ge=1)
    max_train_examples: int | None = Field(default=None, ge=1, description="cap per round's shard")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="further FinetuneConfig keys, passed through"
    )


class SearchOptions(_Frozen):
    """The λ/density search, run on the validation split only.

    A grid over (density × one λ shared by all tasks), then ``refine_passes`` passes of
    coordinate search moving one task's λ by ±``refine_step`` at a time.
    """

    lambdas: tuple[float, ...] = Field(default=(0.3, 0.5, 0.7, 1.0), min_length=1)
    densities: tuple[float, ...] = Field(default=(0.25, 0.5), min_length=1)
    refine_passes: int = Field(default=1, ge=0)
    refine_step: float = Field(default=0.1, gt=0)
    cabs_block: int = Field(default=8, ge=2, description="m of CABS n:m; n = round(density*m)")

    @field_validator("densities")
    @classmethod
    def _densities(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < d <= 1 for d in v):
            raise ValueError(f"densities must lie in (0, 1], got {list(v)}")
        return v


class EvolveConfig(_Frozen):
    """Everything one evolution run needs; validated once, frozen.

    Rounds r = 1..R: every task fine-tunes from the strategy's current model on its
    train shard r, the results are merged into the current model (heads excluded;
    each task keeps its own head), every task is evaluated on validation and test,
    and the merged model is the next round's model. λ/density are chosen on
    validation; test is only reported.
    """

    model: str = Field(default="minilm", description="embedded name, folder or Hub name")
    tasks: list[str] = Field(min_length=1, description="classification datasets")
    domains: dict[str, str] = Field(
        default_factory=dict, description="task -> domain corpus; default: the data card's"
    )
    modules: dict[str, str] = Field(
        default_factory=dict, description="domain -> existing module file (skips modularize)"
    )
    rounds: int = Field(default=3, ge=1)
    strategies: list[str] = Field(default_factory=lambda: list(ALL_STRATEGIES), min_length=1)
    modularize: ModularizeOptions = Field(default_factory=ModularizeOptions)
    finetune: FinetuneOptions = Field(default_factory=FinetuneOptions)
    search: SearchOptions = Field(default_factory=SearchOptions)
    max_eval_examples: int | None = Field(
        default=500, ge=1, description="val/test examples per task"
    )
    max_search_examples: int | None = Field(
        default=200, ge=1, description="validation examples per task scored by the λ search"
    )
    probe_steps: int = Field(default=150, ge=1, description="linear-probe steps for the base heads")
    jobs: int | Literal["auto"] = Field(
        default="auto", description="parallel fine-tunes per round; auto: one per GPU, else 1"
    )
    seed: int = 42
    output_dir: str = "runs/evolve"
    keep_finetuned: bool = Field(default=False, description="keep every fine-tuned model folder")
    plots: bool = True
    progress: bool = True
    cpu: bool = False

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in ALL_STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {list(ALL_STRATEGIES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"strategies repeat a name: {v}")
        return v

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("jobs must be >= 1 or 'auto'")
        return v

    @model_validator(mode="after")
    def _tasks_unique(self) -> EvolveConfig:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks repeat a name: {self.tasks}")
        stray = sorted(set(self.domains) - set(self.tasks))
        if stray:
            raise ValueError(f"domains names tasks not in `tasks`: {stray}")
        return self
