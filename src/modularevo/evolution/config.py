"""Typed config of a multi-round evolution run (``modularevo evolve``).

Example:
    >>> cfg = EvolveConfig(model="tiny-bert", tasks=["math-type", "lang-id"], rounds=2)
    >>> cfg.strategies[0], cfg.modularize.density
    ('base', 0.25)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modularevo.evolution.strategies import STRATEGIES, Strategy, cabs_n
from modularevo.training.finetune_config import FinetuneConfig

ALL_STRATEGIES = tuple(STRATEGIES.names())


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
    lr: float | None = Field(
        default=0.01, gt=0, description="peak lr of the scores; null: planned (issue-12 recipe)"
    )
    alpha: float | None = Field(
        default=100.0, ge=0, description="sparsity pressure; null: calibrated on the gradients"
    )
    max_train_texts: int | None = Field(default=None, ge=1)
    max_val_texts: int = Field(default=256, ge=1)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="further ModularizeConfig keys, passed through"
    )


# FinetuneConfig keys that the evolution sets per job; a run config leaves them out.
JOB_KEYS = (
    "model", "task", "strategy", "module", "allow_modified_base", "seed", "output_dir",
    "train_shard", "overwrite", "resume", "cpu", "progress",
)  # fmt: skip


class EvolveFinetune(FinetuneConfig):
    """The per-round fine-tunes' options: a partial :class:`FinetuneConfig`.

    Every knob and its default is FinetuneConfig's; the keys of :data:`JOB_KEYS` are
    filled in per job (model, task, strategy, module, seed (run seed, task, round),
    folder, train shard, ...). ``module_lr`` is the one addition: the learning rate
    inside modules (default ``lr``).
    """

    model: str = Field("", description="set per job: the run's model")
    task: str = Field("", description="set per job")
    strategy: Literal["module", "full", "lora"] = Field("full", description="set per job")
    module_lr: float | None = Field(None, gt=0, description="lr inside modules; default lr")

    @model_validator(mode="after")
    def _no_job_keys(self) -> EvolveFinetune:
        fields = type(self).model_fields
        given = [k for k in JOB_KEYS if getattr(self, k) != fields[k].get_default()]
        if given:
            raise ValueError(
                f"finetune.{given[0]} is set per job by the evolution (keys {list(JOB_KEYS)}); "
                "remove it from the run config"
            )
        return self

    def for_job(self, update: dict[str, Any]) -> FinetuneConfig:
        """The full, validated FinetuneConfig of one job: these options plus ``update``."""
        data = self.model_copy(update=update).model_dump(exclude={"module_lr"})
        return FinetuneConfig.model_validate(data)


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


class StrategyVariant(_Frozen):
    """A registered strategy with other settings, run beside the others (an ablation).

    Example (YAML)::

        variants:
          modularevo_mean: {of: modularevo, merge: {overlap: mean}}
          modularevo_lambda1: {of: modularevo, search: {lambdas: [1.0], refine_passes: 0}}
          modularevo_d50: {of: modularevo, module_density: 0.5}
    """

    of: str = Field(description="the registered strategy this varies")
    merge: dict[str, Any] = Field(
        default_factory=dict, description="fixed merge parameters added to the parent's"
    )
    lr: float | None = Field(
        default=None, gt=0, description="fine-tuning lr (inside the module for module strategies)"
    )
    module_density: float | None = Field(
        default=None, gt=0, lt=1, description="module snapshot level (0.75, 0.5, 0.25 are saved)"
    )
    search: dict[str, Any] = Field(
        default_factory=dict,
        description="λ-search options replacing the run's (SearchOptions keys)",
    )

    @field_validator("search")
    @classmethod
    def _search_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        SearchOptions.model_validate(v)  # unknown keys and bad values fail here
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
    tasks: list[str] = Field(
        min_length=1, description="classification or generation datasets (a `target` column)"
    )
    domains: dict[str, str] = Field(
        default_factory=dict, description="task -> domain corpus; default: the data card's"
    )
    modules: dict[str, str] = Field(
        default_factory=dict, description="domain -> existing module file (skips modularize)"
    )
    rounds: int = Field(default=3, ge=1)
    strategies: list[str] = Field(default_factory=lambda: list(ALL_STRATEGIES), min_length=1)
    variants: dict[str, StrategyVariant] = Field(
        default_factory=dict,
        description="name -> a registered strategy with other settings; list the name in "
        "`strategies` to run it",
    )
    modularize: ModularizeOptions = Field(default_factory=ModularizeOptions)
    finetune: EvolveFinetune = Field(default_factory=lambda: EvolveFinetune.model_validate({}))
    search: SearchOptions = Field(default_factory=SearchOptions)
    max_eval_examples: int | None = Field(
        default=500, ge=1, description="val/test examples per task"
    )
    max_search_examples: int | None = Field(
        default=200, ge=1, description="validation examples per task scored by the λ search"
    )
    probe_steps: int = Field(default=150, ge=1, description="linear-probe steps for the base heads")
    retention_tasks: list[str] = Field(
        default_factory=list,
        description="tasks never trained: their round-0 probe head stays fixed and is re-scored "
        "on every merged backbone (forgetting = round-0 accuracy - round-r accuracy)",
    )
    gate_min_gain: float | None = Field(
        default=None,
        ge=0,
        description="points single_task must gain over base on every task's validation after "
        "round 1 before the other strategies run; the run stops otherwise",
    )
    jobs: int | Literal["auto"] = Field(
        default="auto", description="parallel fine-tunes per round; auto: one per GPU, else 1"
    )
    seed: int = 42
    output_dir: str = "runs/evolve"
    keep_finetuned: bool = Field(default=False, description="keep every fine-tuned model folder")
    plots: bool = True
    tracker: Literal["tensorboard", "none"] = Field(
        default="tensorboard",
        description="curves through Accelerate's TensorBoard tracker (offline): every "
        "fine-tune's and the rounds' accuracies; `none` turns it off everywhere",
    )
    progress: bool = True
    stage_progress: bool = Field(
        default=True, description="a bar per fine-tune and module too (false: the run's bar only)"
    )
    cpu: bool = False

    @model_validator(mode="after")
    def _known_strategies(self) -> EvolveConfig:
        v = self.strategies
        unknown = [s for s in v if s not in ALL_STRATEGIES and s not in self.variants]
        if unknown:
            raise ValueError(
                f"unknown strategies {unknown}; known: {list(ALL_STRATEGIES)}"
                + (f" and the variants {list(self.variants)}" if self.variants else "")
            )
        if len(set(v)) != len(v):
            raise ValueError(f"strategies repeat a name: {v}")
        for name, var in self.variants.items():
            if var.of not in ALL_STRATEGIES:
                raise ValueError(
                    f"variants.{name}.of = {var.of!r} is not a registered strategy; "
                    f"known: {list(ALL_STRATEGIES)}"
                )
            self.strategy(name)  # a setting the parent cannot use fails here
        return self

    def strategy(self, name: str) -> Strategy:
        """The strategy called ``name``: a registered one or one of :attr:`variants`."""
        var = self.variants.get(name)
        if var is None:
            return STRATEGIES.get(name)
        return STRATEGIES.get(var.of).variant(
            name,
            merge=var.merge,
            lr=var.lr,
            module_density=var.module_density,
            search=var.search,
        )

    def search_for(self, strategy: Strategy) -> SearchOptions:
        """The λ-search options of ``strategy``: the run's, with a variant's replacements."""
        if not strategy.search:
            return self.search
        return SearchOptions.model_validate({**self.search.model_dump(), **strategy.search})

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
        both = sorted(set(self.retention_tasks) & set(self.tasks))
        if both or len(set(self.retention_tasks)) != len(self.retention_tasks):
            raise ValueError(
                f"retention_tasks must be distinct and not trained; {both or self.retention_tasks}"
            )
        if self.gate_min_gain is not None and {"base", "single_task"} - set(self.strategies):
            raise ValueError("gate_min_gain compares single_task with base; list both strategies")
        return self

    @model_validator(mode="after")
    def _cabs_densities(self) -> EvolveConfig:
        k = len(self.tasks)
        for name in self.strategies:
            strategy = self.strategy(name)
            if strategy.merge_method != "cabs":
                continue
            o = self.search_for(strategy)
            m = o.cabs_block
            if not any(k * cabs_n(d, m) <= m for d in o.densities):
                n = cabs_n(min(o.densities), m)
                raise ValueError(
                    f"{name} with K={k} tasks and n:m = {n}:{m} (smallest density "
                    f"{min(o.densities)}) gives K*n = {k * n} > m = {m}: later tasks "
                    f"would get empty masks; add a density <= {1 / k:.3g} to search.densities "
                    f"or raise search.cabs_block"
                )
        return self
