"""Generation tasks: tell them apart from classification, and tokenize question -> answer pairs.

A generation task has a ``text`` column (the question) and a ``target`` column (the
answer). A causal LM learns it on ``prompt + answer``, with the loss on the answer tokens
only: every prompt position of ``labels`` is ``-100``, the value cross-entropy ignores.

Example:
    >>> ex = tokenize_pairs(ds["train"], tok, max_length=128)   # doctest: +SKIP
    >>> ex[0]["labels"][: ex[0]["prompt_len"]]                 # doctest: +SKIP
    [-100, -100, ...]
"""

from __future__ import annotations

from typing import Any, Literal

from modularevo.data.collate import Example
from modularevo.errors import InputError

TaskType = Literal["classification", "generation"]
IGNORE_INDEX = -100
TARGET_COLUMN = "target"
PROMPT_TEMPLATE = "{text}\nAnswer:"
ANSWER_PREFIX = " "


def task_type_of(dataset: Any) -> TaskType:
    """``"generation"`` when the train split has a ``target`` column, else ``"classification"``."""
    train = dataset["train"]
    columns = list(getattr(train, "column_names", None) or (list(train[0]) if len(train) else []))
    return "generation" if TARGET_COLUMN in columns else "classification"


def resolve_task_type(requested: str, dataset: Any) -> TaskType:
    """The task type of a run: ``requested``, or the dataset's when ``"auto"``.

    Raises:
        InputError: ``generation`` asked of a dataset without a ``target`` column.
    """
    found = task_type_of(dataset)
    if requested == "auto":
        return found
    if requested == "generation" and found != "generation":
        columns = list(getattr(dataset["train"], "column_names", []))
        raise InputError(
            f"task_type 'generation' needs a {TARGET_COLUMN!r} column (the answer); the dataset "
            f"has {columns}; use a generation task (`modularevo data ls`, kind generation) or "
            "task_type: classification"
        )
    return "classification" if requested == "classification" else "generation"


def tokenize_pairs(
    split: Any,
    tokenizer: Any,
    *,
    max_length: int,
    max_target_length: int = 48,
    prompt_template: str = PROMPT_TEMPLATE,
    answer_prefix: str = ANSWER_PREFIX,
) -> list[Example]:
    """Tokenize question -> answer rows for causal-LM training and greedy evaluation.

    The prompt (``prompt_template`` filled with the row's ``text``, special tokens such as
    BOS added as the tokenizer does) and the answer (``answer_prefix + target``, plus EOS
    when the tokenizer has one) are tokenized separately and joined, so generation, which
    starts from the prompt's tokens, continues exactly where training did. The answer is
    cut to ``max_target_length`` tokens (at most half of ``max_length``); the prompt loses
    tokens from its *start* so that
    prompt + answer fit ``max_length`` and the cue at its end stays.

    Args:
        split: a ``datasets.Dataset`` (or list of dicts) with ``text`` and ``target``.
        tokenizer: a Hugging Face tokenizer.
        max_length: longest prompt + answer, in tokens.
        max_target_length: longest answer, in tokens (EOS included; at most max_length / 2).
        prompt_template: format string with ``{text}``.
        answer_prefix: put before the answer (a space suits byte-level BPE vocabularies).

    Returns:
        One dict per row: ``input_ids``/``attention_mask`` (prompt + answer), ``labels``
        (``-100`` on the prompt, the answer's ids after it), ``prompt_ids``, ``prompt_len``
        and ``target`` (the reference answer as text).

    Raises:
        InputError: a missing column or a template without ``{text}``.
    """
    columns = getattr(split, "column_names", None) or (list(split[0]) if len(split) else [])
    missing = [c for c in ("text", TARGET_COLUMN) if c not in columns]
    if missing:
        raise InputError(
            f"split lacks column(s) {missing}; found {columns}, a generation task needs "
            f"'text' (the question) and {TARGET_COLUMN!r} (the answer)"
        )
    if "{text}" not in prompt_template:
        raise InputError(f"prompt_template {prompt_template!r} must contain '{{text}}'")
    eos = getattr(tokenizer, "eos_token_id", None)
    rows = split if isinstance(split, list) else split.select_columns(["text", TARGET_COLUMN])
    out: list[Example] = []
    for row in rows:
        prompt = tokenizer(prompt_template.format(text=row["text"]))["input_ids"]
        answer = tokenizer(answer_prefix + str(row[TARGET_COLUMN]), add_special_tokens=False)
        answer_ids = list(answer["input_ids"]) + ([eos] if isinstance(eos, int) else [])
        answer_ids = answer_ids[: min(max_target_length, max_length // 2)]
        prompt = list(prompt)[-(max_length - len(answer_ids)) :]
        ids = prompt + answer_ids
        out.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * len(prompt) + answer_ids,
                "prompt_ids": prompt,
                "prompt_len": len(prompt),
                "target": str(row[TARGET_COLUMN]),
            }
        )
    return out


__all__ = [
    "ANSWER_PREFIX",
    "IGNORE_INDEX",
    "PROMPT_TEMPLATE",
    "TARGET_COLUMN",
    "TaskType",
    "resolve_task_type",
    "task_type_of",
    "tokenize_pairs",
]
