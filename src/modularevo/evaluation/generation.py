"""Score a causal LM on a generation task: greedy answers, normalised exact match, answer loss.

* :func:`normalize_answer` / :func:`exact_match`: pure functions on strings.
* :func:`greedy_answers`: greedy decoding from left-padded prompts (the model's own
  ``generate`` when it has one, else a plain loop that re-reads the whole sequence).
* :func:`score_generation`: the answers of every example of a split, sharded over
  processes like classification, with the exact-match accuracy, the answer-token loss
  (teacher forced) and, on request, the per-example predictions and references.

Example:
    >>> normalize_answer("  42.\\nmore text")
    '42'
    >>> exact_match(["4", "x = 2"], ["4 ", "x=2"])
    0.5
"""

from __future__ import annotations

import inspect
import unicodedata
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from torch import Tensor, nn

from modularevo.data.collate import pad_batch, pad_id_of
from modularevo.data.generation import tokenize_pairs
from modularevo.errors import InputError
from modularevo.evaluation.stats import wilson_interval
from modularevo.utils.device import build_accelerator

IGNORE_INDEX = -100


def normalize_answer(text: str) -> str:
    """The first line of ``text``, NFKC-normalised, whitespace collapsed, a final ``.`` dropped.

    Case is kept: ``True`` and ``true``, or ``getId`` and ``getid``, are different answers.
    """
    line = unicodedata.normalize("NFKC", text).strip().split("\n", 1)[0]
    line = " ".join(line.split())
    return line[:-1].rstrip() if line.endswith(".") else line


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after :func:`normalize_answer`.

    Raises:
        InputError: if the sequences differ in length or are empty.
    """
    if len(predictions) != len(references):
        raise InputError(
            f"{len(predictions)} predictions for {len(references)} references; pass one "
            "prediction per example"
        )
    if not references:
        raise InputError("no examples to score: predictions and references are empty")
    hits = sum(
        normalize_answer(p) == normalize_answer(r)
        for p, r in zip(predictions, references, strict=True)
    )
    return hits / len(references)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    longest = max(len(p) for p in prompts)
    ids = [[pad_id] * (longest - len(p)) + list(p) for p in prompts]
    mask = [[0] * (longest - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _positions(mask: Tensor) -> Tensor:
    # the same rule as models.heads.positions_from_mask, which would import transformers here
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _takes_positions(model: nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


@torch.no_grad()
def greedy_answers(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    use_generate: bool = True,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token ids), each cut before its first EOS.

    Args:
        model: a causal LM returning ``.logits`` (batch, seq, vocab).
        prompts: the prompts' token ids (unpadded).
        pad_id: id used to left-pad the prompts (attention mask 0 there).
        eos_id: the end-of-sequence id, or None (then every answer has max_new_tokens).
        max_new_tokens: longest answer.
        use_generate: use ``model.generate`` (key-value cache) when the model has it; the
            plain loop gives the same tokens, slower.

    Returns:
        The new tokens of each prompt, EOS and what follows it removed.
    """
    device = next(model.parameters()).device
    ids, mask = _left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    generate = getattr(model, "generate", None) if use_generate else None
    if callable(generate):
        from transformers import GenerationConfig  # heavy; loaded only to decode

        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=pad_id, eos_token_id=eos_id,
        )  # fmt: skip
        out: Any = generate(input_ids=ids, attention_mask=mask, generation_config=config)
        sequences: Tensor = out if isinstance(out, Tensor) else out.sequences
        new = sequences[:, ids.shape[1] :]
    else:
        new = _greedy_loop(model, ids, mask, eos_id=eos_id, max_new_tokens=max_new_tokens)
    answers = []
    for row in new.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        answers.append(row)
    return answers


def _greedy_loop(
    model: nn.Module, ids: Tensor, mask: Tensor, *, eos_id: int | None, max_new_tokens: int
) -> Tensor:
    positions = _takes_positions(model)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    start = ids.shape[1]
    for _ in range(max_new_tokens):
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if positions:
            kwargs["position_ids"] = _positions(mask)
        nxt = model(**kwargs).logits[:, -1].argmax(dim=-1)  # (batch,)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if bool(done.all()):
            break
    return ids[:, start:]


@torch.no_grad()
def answer_losses(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy over each example's answer tokens (``labels != -100``), (batch,)."""
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    if _takes_positions(model):
        kwargs["position_ids"] = _positions(batch["attention_mask"])
    logits = model(**kwargs).logits[:, :-1].float()  # (batch, seq-1, vocab)
    labels = batch["labels"][:, 1:]  # (batch, seq-1): token t+1 is predicted at t
    per_token = F.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (batch, seq-1)
    counts = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return per_token.sum(dim=1) / counts


def score_generation(
    model: nn.Module,
    examples: list[dict[str, Any]],
    tokenizer: Any,
    *,
    pad_id: int,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    accelerator: Any = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Greedy answers and exact match on tokenized examples (from ``tokenize_pairs``).

    Args:
        model: a causal LM.
        examples: rows with ``prompt_ids``, ``target`` and the training view
            (``input_ids``, ``attention_mask``, ``labels``) for the answer loss.
        tokenizer: decodes the answers.
        pad_id: padding id.
        max_new_tokens: longest answer generated.
        batch_size: prompts per batch and process.
        accelerator: an Accelerator (several processes share the work); default one process.
        predictions: also return ``predictions`` and ``labels`` (normalised answer and
            reference per example, in example order), for paired tests.

    Returns:
        ``accuracy`` (exact match), ``loss`` (mean answer-token cross-entropy), ``n``,
        ``ci95`` (Wilson interval of the accuracy) and, on request, the per-example lists.

    Raises:
        InputError: if ``examples`` is empty.
    """
    if not examples:
        raise InputError("the split to evaluate is empty; nothing to score")
    acc = accelerator or build_accelerator()
    if accelerator is None:
        model = model.to(acc.device)
    plain = acc.unwrap_model(model)
    was_training = plain.training
    plain.eval()
    eos = getattr(tokenizer, "eos_token_id", None)
    mine = list(range(acc.process_index, len(examples), acc.num_processes))
    rows: list[tuple[int, str, str, float]] = []
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        part = [examples[i] for i in idx]
        answers = greedy_answers(
            plain, [ex["prompt_ids"] for ex in part], pad_id=pad_id,
            eos_id=eos if isinstance(eos, int) else None, max_new_tokens=max_new_tokens,
        )  # fmt: skip
        batch = pad_batch(
            [{k: ex[k] for k in ("input_ids", "attention_mask", "labels")} for ex in part],
            pad_id=pad_id,
        )
        losses = answer_losses(plain, {k: v.to(acc.device) for k, v in batch.items()})
        for i, ex, ans, loss in zip(idx, part, answers, losses.tolist(), strict=True):
            text = tokenizer.decode(ans, skip_special_tokens=True)
            rows.append((i, normalize_answer(text), normalize_answer(ex["target"]), loss))
    if acc.num_processes > 1:
        rows = gather_object(rows)
    rows.sort(key=lambda r: r[0])
    plain.train(was_training)
    hits = sum(r[1] == r[2] for r in rows)
    lo, hi = wilson_interval(hits, len(rows))
    out: dict[str, Any] = {
        "accuracy": hits / len(rows),
        "loss": sum(r[3] for r in rows) / len(rows),
        "n": len(rows),
        "ci95": [lo, hi],
    }
    if predictions:
        out["predictions"] = [r[1] for r in rows]
        out["labels"] = [r[2] for r in rows]
    return out


def evaluate_generation(
    model: nn.Module | str,
    data: Any,
    *,
    tokenizer: Any = None,
    max_length: int = 128,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    prompt_template: str = "{text}\nAnswer:",
    answer_prefix: str = " ",
) -> dict[str, Any]:
    """Greedy exact match of a causal LM on one split of a generation task.

    Args:
        model: a folder written by ``modularevo finetune`` (its ``model/``), an embedded or
            Hub name, or an ``nn.Module`` (then ``tokenizer`` is required).
        data: the split (``text`` and ``target`` columns).
        tokenizer: tokenizer of an in-memory ``model``.
        max_length: longest prompt + answer, in tokens.
        max_new_tokens: longest generated answer.
        batch_size: prompts per batch.
        prompt_template: the prompt the model was fine-tuned with (``{text}`` = question).
        answer_prefix: put before the reference answer (its loss only).

    Returns:
        ``accuracy``, ``loss``, ``n``, ``ci95``, ``predictions`` and ``labels``.

    Raises:
        InputError: an in-memory model without its tokenizer.
    """
    if isinstance(model, str):
        # deferred: transformers is a heavy import; models passed in need none
        from modularevo.models.load import load_model

        model, tokenizer = load_model(model, "causal_lm")
    elif tokenizer is None:
        raise InputError("an in-memory model needs its `tokenizer` to be evaluated")
    examples = tokenize_pairs(
        data, tokenizer, max_length=max_length, prompt_template=prompt_template,
        answer_prefix=answer_prefix,
    )  # fmt: skip
    return score_generation(
        model, examples, tokenizer, pad_id=pad_id_of(tokenizer), max_new_tokens=max_new_tokens,
        batch_size=batch_size, predictions=True,
    )  # fmt: skip


__all__ = [
    "answer_losses",
    "evaluate_generation",
    "exact_match",
    "greedy_answers",
    "normalize_answer",
    "score_generation",
]
