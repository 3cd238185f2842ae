"""Data of one fine-tuning run: the train shard, eval slices, tokenized once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modularevo.data.collate import Example, pad_id_of, tokenize_split
from modularevo.data.generation import TaskType, resolve_task_type, tokenize_pairs
from modularevo.errors import InputError
from modularevo.training.finetune_config import FinetuneConfig, TrainShard
from modularevo.utils.seed import derived_generator


@dataclass
class RunData:
    """Tokenized splits and facts about the label set (none for a generation task)."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    num_labels: int
    label_names: list[str]
    pad_id: int
    task_type: TaskType = "classification"
    tokenizer: Any = None


def shard_indices(n: int, shard: TrainShard) -> list[int]:
    """Indices of part ``shard.index`` of ``shard.count`` equal parts of a seeded shuffle.

    The parts of one ``(n, count, seed)`` are disjoint and together cover all but
    the ``n % count`` examples left over at the end.
    """
    order = torch.randperm(n, generator=derived_generator(shard.seed, "train-shard")).tolist()
    size = n // shard.count
    return sorted(order[shard.index * size : (shard.index + 1) * size])


def label_info(dataset: Any) -> tuple[int, list[str]]:
    """(number of labels, label names) from the train split's ``label`` ClassLabel.

    Raises:
        InputError: if the label column has no class names and no labels.
    """
    train = dataset["train"]
    columns = list(getattr(train, "column_names", None) or ["label"])
    if "label" not in columns:
        raise InputError(
            f"the dataset has no label column (its columns: {columns}); a classification task "
            "needs one: name it with label_column=<column> (and text_column=<column> for the text)"
        )
    feature = getattr(train, "features", {}).get("label")
    names = list(getattr(feature, "names", None) or [])
    if names:
        return len(names), names
    labels = set(train["label"])
    if not labels:
        raise InputError("the train split has no labels; a classification task needs them")
    k = max(labels) + 1
    return k, [str(i) for i in range(k)]


def prepare_data(config: FinetuneConfig, dataset: Any, tokenizer: Any) -> RunData:
    """Slice and tokenize the splits as ``config`` asks.

    Raises:
        InputError: if a split is missing.
    """
    missing = [s for s in ("train", "validation", "test") if s not in dataset]
    if missing:
        raise InputError(
            f"dataset lacks split(s) {missing}; found {sorted(dataset)}; selection needs "
            "'validation' and reporting needs 'test'"
        )
    task_type = resolve_task_type(config.task_type, dataset)
    num_labels, names = label_info(dataset) if task_type == "classification" else (0, [])
    train = dataset["train"]
    if config.train_shard is not None:
        train = train.select(shard_indices(len(train), config.train_shard))
    if config.max_train_examples is not None:
        train = train.select(range(min(config.max_train_examples, len(train))))

    def tokenize(data: Any) -> list[Example]:
        if task_type == "classification":
            return tokenize_split(data, tokenizer, max_length=config.max_length)
        g = config.generation
        return tokenize_pairs(
            data, tokenizer, max_length=config.max_length, max_target_length=g.max_target_length,
            prompt_template=g.prompt_template, answer_prefix=g.answer_prefix,
        )  # fmt: skip

    def evaluation(split: str) -> list[Example]:
        data = dataset[split]
        if config.max_eval_examples is not None:
            data = data.select(range(min(config.max_eval_examples, len(data))))
        return tokenize(data)

    return RunData(
        train=tokenize(train),
        validation=evaluation("validation"),
        test=evaluation("test"),
        num_labels=num_labels,
        label_names=names,
        pad_id=pad_id_of(tokenizer),
        task_type=task_type,
        tokenizer=tokenizer,
    )
