"""Task data, task templates and scoring for an evolution run.

:class:`TaskEvaluator` holds, per task, one model in memory (the *template*, whose
weights are overwritten for each evaluation), the tokenized evaluation slices and the
linear probe used for the untouched base. A generation task's template is its causal
LM, scored by greedy decoding and exact match (its "accuracy"; predictions and labels
are the normalised answers, so the report's paired tests read them as they are).
Selection (the λ search) only sees the ``search`` slice of validation; while an
objective runs, the test split is locked and reading it raises :class:`LockedSplitError`.
Validation and test scores keep their per-example predictions and labels, for the
paired tests of the report.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.data.collate import Example, pad_batch, pad_id_of, tokenize_split
from modularevo.data.generation import TaskType, task_type_of, tokenize_pairs
from modularevo.evaluation.evaluate import score_split
from modularevo.evaluation.generation import score_generation
from modularevo.training.finetune_config import GenerationOptions
from modularevo.training.finetune_data import label_info
from modularevo.utils.seed import derived_generator

logger = logging.getLogger(__name__)

SPLITS = ("search", "validation", "test")


class LockedSplitError(RuntimeError):
    """The test split was read while a selection objective ran (a leak of test into selection)."""


def subset_indices(n: int, cap: int | None, seed: int, key: str) -> list[int]:
    """A seeded random subset of ``range(n)`` of size ``min(n, cap)``, sorted."""
    if cap is None or cap >= n:
        return list(range(n))
    order = torch.randperm(n, generator=derived_generator(seed, "eval-subset", key))
    return sorted(order[:cap].tolist())


@dataclass
class TaskData:
    """One task's tokenized evaluation slices and label facts (and, for a generation task,
    its tokenizer and decoding length)."""

    name: str
    num_labels: int
    pad_id: int
    splits: dict[str, list[Example]]
    task_type: TaskType = "classification"
    tokenizer: Any = None
    max_new_tokens: int = 32


def prepare_task(
    name: str,
    dataset: Any,
    tokenizer: Any,
    *,
    max_length: int,
    caps: Mapping[str, int | None],
    generation: GenerationOptions | None = None,
    task_type: TaskType | None = None,
) -> TaskData:
    """Tokenize seeded subsets of validation (``search``, ``validation``) and test.

    A generation task (``task_type``, default read from the columns) is tokenized as
    prompt + answer with ``generation``'s prompt (default options when None).
    """
    kind = task_type or task_type_of(dataset)
    gen = generation or GenerationOptions.model_validate({})
    num_labels = label_info(dataset)[0] if kind == "classification" else 0
    splits: dict[str, list[Example]] = {}
    for split, source in (("search", "validation"), ("validation", "validation"), ("test", "test")):
        data = dataset[source]
        idx = subset_indices(len(data), caps.get(split), 0, f"{name}/{source}/{split}")
        if kind == "classification":
            splits[split] = tokenize_split(data.select(idx), tokenizer, max_length=max_length)
        else:
            splits[split] = tokenize_pairs(
                data.select(idx), tokenizer, max_length=max_length,
                max_target_length=gen.max_target_length, prompt_template=gen.prompt_template,
                answer_prefix=gen.answer_prefix,
            )  # fmt: skip
    return TaskData(
        name, num_labels, pad_id_of(tokenizer), splits, kind, tokenizer, gen.max_new_tokens
    )


class TaskEvaluator:
    """Scores state dicts on each task with a per-task classifier template.

    Args:
        data: task -> :class:`TaskData`.
        templates: task -> classifier module (its weights get overwritten).
        batch_size: examples per forward pass.
    """

    def __init__(
        self, data: dict[str, TaskData], templates: dict[str, nn.Module], batch_size: int = 64
    ) -> None:
        self.data = data
        self.templates = templates
        self.batch_size = batch_size
        self._test_locked = False
        self.test_reads = 0

    @contextlib.contextmanager
    def locked_test(self) -> Iterator[None]:
        """Within the block, any read of the test split raises :class:`LockedSplitError`."""
        before = self._test_locked
        self._test_locked = True
        try:
            yield
        finally:
            self._test_locked = before

    def score(self, task: str, state: Mapping[str, Tensor], split: str) -> dict[str, Any]:
        """Load ``state`` into ``task``'s template and score it on ``split``.

        Validation and test results carry ``predictions`` and ``labels`` (per example).

        Raises:
            LockedSplitError: ``split`` is test and a selection objective is running.
        """
        if split == "test":
            if self._test_locked:
                raise LockedSplitError(
                    f"the test split of {task!r} was read while a selection objective ran; "
                    "selection must score the 'search' or 'validation' split only"
                )
            self.test_reads += 1
        model = self.templates[task]
        model.load_state_dict(dict(state), strict=True)
        d = self.data[task]
        if d.task_type == "generation":
            return score_generation(
                model, d.splits[split], d.tokenizer, pad_id=d.pad_id,
                max_new_tokens=d.max_new_tokens, batch_size=self.batch_size,
                predictions=split != "search",
            )  # fmt: skip
        return score_split(
            model,
            d.splits[split],
            pad_id=d.pad_id,
            num_labels=d.num_labels,
            batch_size=self.batch_size,
            predictions=split != "search",
        )

    def score_all(
        self, states: Callable[[str], Mapping[str, Tensor]]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Validation and test scores of every task; ``states(task)`` gives its weights."""
        return {
            t: {s: self.score(t, states(t), s) for s in ("validation", "test")} for t in self.data
        }

    def search_objective(
        self,
        merged: Callable[[list[float], float | None], Mapping[str, Tensor]],
        heads: Mapping[str, Mapping[str, Tensor]],
    ) -> Callable[[list[float], float | None], float]:
        """``(lambdas, density) -> mean search-slice accuracy``, test locked while it runs."""

        def objective(lambdas: list[float], density: float | None) -> float:
            with self.locked_test():
                shared = merged(lambdas, density)
                accs = [
                    self.score(t, {**shared, **heads[t]}, "search")["accuracy"] for t in self.data
                ]
            return sum(accs) / len(accs)

        return objective


def pooled_features(model: nn.Module, examples: list[Example], pad_id: int, bs: int) -> Tensor:
    """The inputs of ``model.classifier`` (pooled states) for ``examples``, (n, hidden)."""
    head = model.get_submodule("classifier")
    grabbed: list[Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _o: grabbed.append(inp[0].detach()))
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(examples), bs):
                batch = pad_batch(examples[start : start + bs], pad_id=pad_id)
                batch.pop("labels", None)
                model(**batch)
    finally:
        hook.remove()
    return torch.cat(grabbed)


def train_probe(
    features: Tensor, labels: Tensor, num_labels: int, *, steps: int, seed: int
) -> dict[str, Tensor]:
    """Fit a linear head (full-batch AdamW) on frozen features; returns weight and bias."""
    g = derived_generator(seed, "probe")
    head = nn.Linear(features.shape[1], num_labels)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=g)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(features), labels)
        loss.backward()
        opt.step()
    logger.debug("probe loss %.4f", float(loss.detach()))
    return {"weight": head.weight.detach().clone(), "bias": head.bias.detach().clone()}
