"""Typed config of one fine-tuning run (``modularevo finetune``).

Example:
    >>> cfg = FinetuneConfig(model="tiny-bert", task="lang-id", strategy="full")
    >>> cfg.batch_size, cfg.strategy
    (16, 'full')
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modularevo.emoe.config import EMoEConfig
from modularevo.training.recovery_config import DistillConfig, GatesConfig

Strategy = Literal["module", "full", "lora"]


class TrainShard(BaseModel):
    """Use only part ``index`` of ``count`` equal parts of the train split (evolution rounds).

    The train split is shuffled once with ``seed`` and cut into ``count`` contiguous parts,
    so the parts of the same ``seed`` are disjoint and cover the split.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0, description="which part, 0-based")
    count: int = Field(ge=1, description="number of equal parts")
    seed: int = Field(42, description="seed of the shuffle before cutting")

    @model_validator(mode="after")
    def _index_in_range(self) -> TrainShard:
        if self.index >= self.count:
            raise ValueError(f"index {self.index} must be < count {self.count}")
        return self


class LoraOptions(BaseModel):
    """LoRA (PEFT) options used when ``strategy: lora``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(8, ge=1)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        None, description="module name suffixes; default: every Linear outside the task head"
    )


class GenerationOptions(BaseModel):
    """How a generation task (question -> answer) is put to a causal LM and scored.

    The model reads ``prompt_template`` filled with the question, then learns the answer
    (``answer_prefix + target`` and EOS) with the loss on the answer tokens only; it is
    scored by greedy decoding and normalised exact match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_template: str = Field("{text}\nAnswer:", description="the prompt; {text} = question")
    answer_prefix: str = Field(" ", description="put before the answer")
    max_new_tokens: int = Field(32, ge=1, description="longest generated answer, in tokens")
    max_target_length: int = Field(48, ge=1, description="answer tokens kept for training")

    @model_validator(mode="after")
    def _has_text(self) -> GenerationOptions:
        if "{text}" not in self.prompt_template:
            raise ValueError(f"prompt_template {self.prompt_template!r} must contain {{text}}")
        return self


class FinetuneConfig(BaseModel):
    """Everything one fine-tuning run needs; validated once, frozen.

    ``batch_size`` is the *global* batch: with N processes each one sees
    ``batch_size / N`` examples per step, so results do not depend on N.
    Selection (best checkpoint, early stopping) always uses ``validation``;
    ``test`` is only reported.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="embedded model name (minilm, tiny-bert, ...), path or Hub name")
    task: str = Field(description="dataset name for modularevo.data.load_dataset")
    task_type: Literal["auto", "classification", "generation"] = Field(
        "auto", description="auto: generation when the dataset has a `target` column"
    )
    generation: GenerationOptions = Field(
        default_factory=lambda: GenerationOptions.model_validate({}),
        description="prompt and decoding of a generation task",
    )
    text_column: str | None = Field(None, description="text column of a local file/Hub dataset")
    label_column: str | None = Field(None, description="label column of a local file/Hub dataset")
    label_names: list[str] | None = Field(
        None, description="labels in id order, for a local file/Hub dataset"
    )
    strategy: Strategy = "module"
    module: str | None = Field(None, description="module .safetensors file (strategy: module)")
    allow_modified_base: bool = Field(
        False, description="accept a module learned on an ancestor of `model` (evolution rounds)"
    )
    lr: float = Field(5e-5, gt=0)
    head_lr: float | None = Field(None, gt=0, description="lr of the task head; default lr")
    epochs: float = Field(1.0, gt=0, description="used when max_steps is not set")
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int = Field(100, ge=1, description="steps between validation runs")
    patience: int | None = Field(
        3, ge=1, description="stop after this many evals without val-accuracy gain"
    )
    min_delta: float = Field(0.001, ge=0, description="val-accuracy gain that counts")
    eval_at_start: bool = Field(
        True, description="score step 0 too, so the start can win selection (kept on ties)"
    )
    checkpoint_every: int | None = Field(200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(1, ge=1)
    seed: int = 42
    output_dir: str = "runs/finetune"
    overwrite: bool = False
    resume: bool = Field(True, description="resume from output_dir's checkpoints if present")
    train_shard: TrainShard | None = None
    max_train_examples: int | None = Field(None, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = Field(False, description="force CPU even when a GPU is present")
    lora: LoraOptions = Field(default_factory=lambda: LoraOptions.model_validate({}))
    emoe: EMoEConfig | None = Field(
        None, description="split FFNs into EMoE experts before training (arXiv 2310.10908)"
    )
    gates: GatesConfig | None = Field(
        None, description="learn a structured module (FFN neurons, heads) while fine-tuning"
    )
    distill: DistillConfig | None = Field(
        None, description="distil from the dense fine-tuned teacher (KL + hidden MSE)"
    )
    progress: bool = True
    tracker: Literal["tensorboard", "none"] = Field(
        "tensorboard",
        description="training curves through Accelerate's TensorBoard tracker (offline, under "
        "output_dir/tensorboard); `none` turns it off (curves.png is written either way)",
    )

    @model_validator(mode="after")
    def _check_strategy(self) -> FinetuneConfig:
        if self.strategy == "module" and not self.module:
            raise ValueError(
                "strategy 'module' needs `module: path/to/module.safetensors` "
                "(learn one with `modularevo modularize`), or use strategy 'full'/'lora'"
            )
        if self.strategy != "module" and self.module:
            raise ValueError(f"`module` is only used by strategy 'module', not {self.strategy!r}")
        for name in ("gates", "distill"):
            if getattr(self, name) is not None and self.strategy != "full":
                raise ValueError(f"`{name}` trains with strategy 'full', not {self.strategy!r}")
        if self.gates is not None and self.emoe is not None:
            raise ValueError("`gates` and `emoe` do not combine (EMoE reorders FFN neurons)")
        if self.emoe is not None and self.strategy == "module":
            raise ValueError(
                "`emoe` reorders FFN neurons, so a module's masks would no longer line up; "
                "use emoe with strategy 'full' or 'lora'"
            )
        return self
