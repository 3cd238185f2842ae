"""Evaluate a sequence classifier on one split: accuracy, macro-F1 and loss.

Example:
    >>> from modularevo import evaluate_model
    >>> evaluate_model("runs/x/model", task="lang-id", split="validation")  # doctest: +SKIP
    {'accuracy': 0.97, 'macro_f1': 0.96, 'loss': 0.11, 'n': 600, 'split': 'validation'}
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from modularevo.data.collate import pad_batch, pad_id_of, tokenize_split
from modularevo.data.generation import task_type_of
from modularevo.errors import InputError
from modularevo.evaluation.generation import evaluate_generation
from modularevo.evaluation.metrics import accuracy, macro_f1
from modularevo.evaluation.predict import eval_predictions
from modularevo.io.hf_files import check_head_fits
from modularevo.utils.device import build_accelerator

logger = logging.getLogger(__name__)


def score_split(
    model: nn.Module,
    examples: list[dict[str, Any]],
    *,
    pad_id: int,
    num_labels: int | None = None,
    batch_size: int = 64,
    accelerator: Any = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Score tokenized ``examples`` (from :func:`~modularevo.data.collate.tokenize_split`).

    Args:
        model: classifier returning ``.logits``.
        examples: tokenized examples with ``labels``.
        pad_id: padding id of the tokenizer.
        num_labels: size of the label set; classes never seen still count in macro-F1.
        batch_size: examples per forward pass and process.
        accelerator: an Accelerator (several processes share the work); default one process.
        predictions: also return ``predictions`` and ``labels`` (one int per example, in
            example order), for paired tests between models scored on the same examples.

    Returns:
        ``accuracy``, ``macro_f1``, ``loss`` and ``n`` (and the per-example lists).
    """
    if not examples:
        raise InputError("the split to evaluate is empty; nothing to score")
    acc = accelerator or build_accelerator()
    if accelerator is None:
        model = model.to(acc.device)

    def collate(idx: list[int]) -> dict[str, Any]:
        return pad_batch([examples[i] for i in idx], pad_id=pad_id)

    preds, labels, loss = eval_predictions(
        acc, model, len(examples), collate, batch_size=batch_size,
        lengths=[len(e["input_ids"]) for e in examples],
    )  # fmt: skip
    classes = list(range(num_labels)) if num_labels else None
    out: dict[str, Any] = {
        "accuracy": accuracy(labels, preds),
        "macro_f1": macro_f1(labels, preds, labels=classes),
        "loss": loss,
        "n": len(labels),
    }
    if predictions:
        out["predictions"] = [int(p) for p in preds]
        out["labels"] = [int(y) for y in labels]
    return out


def evaluate_model(
    model: str | nn.Module,
    *,
    task: str | None = None,
    split: str = "validation",
    tokenizer: Any = None,
    dataset: Any = None,
    max_length: int = 128,
    batch_size: int = 64,
    max_examples: int | None = None,
    max_new_tokens: int = 32,
) -> dict[str, Any]:
    """Evaluate a classifier (or, on a generation task, a causal LM) on one split of a task.

    A generation task (a ``target`` column: ``math-qa``, ``code-name``) is scored by
    greedy decoding and normalised exact match
    (:func:`~modularevo.evaluation.generation.evaluate_generation`).

    Args:
        model: a folder written by ``modularevo finetune`` (its ``model/``), an embedded or
            Hub name, or an ``nn.Module`` (then ``tokenizer`` is required).
        task: dataset name for :func:`modularevo.data.load_dataset` (or give ``dataset``).
        split: ``validation`` for any selection; ``test`` only for the final report.
        tokenizer: tokenizer of an in-memory ``model``.
        dataset: a DatasetDict (or mapping split -> Dataset) instead of ``task``.
        max_length: truncation length.
        batch_size: examples per forward pass.
        max_examples: evaluate on the first examples of the split only.
        max_new_tokens: longest generated answer (generation tasks).

    Returns:
        ``accuracy``, ``macro_f1``, ``loss``, ``n`` and ``split``; for a generation task
        ``accuracy`` (exact match), ``loss`` (answer tokens), ``n``, ``ci95``, ``split``,
        ``task_type`` and the per-example ``predictions`` and ``labels``.

    Raises:
        InputError: if neither ``task`` nor ``dataset`` is given, the split is missing, or
            an in-memory model comes without a tokenizer.
    """
    if dataset is None:
        if task is None:
            raise InputError("evaluate_model needs `task` (a dataset name) or `dataset`")
        # deferred: datasets is a heavy import; scoring in-memory examples needs none
        from modularevo.data import load_dataset

        dataset = load_dataset(task)
    if split not in dataset:
        raise InputError(f"split {split!r} not in the dataset; found {sorted(dataset)}")
    data = dataset[split]
    if max_examples is not None:
        data = data.select(range(min(max_examples, len(data))))
    if task_type_of(dataset) == "generation":
        result = evaluate_generation(
            model, data, tokenizer=tokenizer, max_length=max_length,
            max_new_tokens=max_new_tokens, batch_size=batch_size,
        )  # fmt: skip
        logger.info("%s: exact match %.4f on %d examples", split, result["accuracy"], result["n"])
        return {**result, "split": split, "task_type": "generation"}
    num_labels = _num_labels(data)
    if isinstance(model, str):
        # deferred: transformers is a heavy import; models passed in need none
        from modularevo.models.load import load_model

        check_head_fits(model, num_labels, task)  # before any weight is read
        model, tokenizer = load_model(model, "classifier", num_labels=num_labels)
    elif tokenizer is None:
        raise InputError("an in-memory model needs its `tokenizer` to be evaluated")
    examples = tokenize_split(data, tokenizer, max_length=max_length)
    result: dict[str, Any] = score_split(
        model, examples, pad_id=pad_id_of(tokenizer), num_labels=num_labels, batch_size=batch_size
    )
    result["split"] = split
    logger.info(
        "%s: accuracy %.4f, macro-F1 %.4f on %d examples",
        split,
        result["accuracy"],
        result["macro_f1"],
        result["n"],
    )
    return result


def _num_labels(data: Any) -> int | None:
    feature = getattr(data, "features", {}).get("label")
    names = getattr(feature, "names", None)
    return len(names) if names else None
