"""The fine-tunes of ``bench_merge_quality.py`` and everything its merges start from.

MiniLM (embedded ``minilm``) is fine-tuned in full once per task (early stopping on
validation); each fine-tune is a ``modularevo finetune`` output folder, cached and resumed
after a kill, or reused from ``--finetunes`` (``DIR/<task>/model`` or ``DIR/<task>``). The
:class:`Setup` holds the pretrained backbone, each task's fine-tuned backbone and head, and
the task data (a seeded validation slice for the search, the test split for the scores).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modularevo.evolution.evaluate import TaskData, TaskEvaluator, prepare_task
from modularevo.training.strategies import head_prefixes, is_head

State = dict[str, torch.Tensor]


@dataclass
class Setup:
    """Everything the merges need: base backbone, fine-tuned backbones and heads, data."""

    base: State
    shared: dict[str, State]
    heads: dict[str, State]
    evaluator: TaskEvaluator
    data: dict[str, TaskData]
    finetunes: dict[str, str] = field(default_factory=dict)


def finetune_folder(task: str, out: Path, reuse: Path | None) -> Path | None:
    """The model folder of ``task``'s full fine-tune if it is finished, else ``None``."""
    for cand in ([reuse / task / "model", reuse / task] if reuse else []) + [
        out / "finetunes" / task / "model"
    ]:
        if (cand / "config.json").is_file():
            return cand
    return None


def ensure_finetunes(args: argparse.Namespace, tasks: Sequence[str]) -> dict[str, Path]:
    """Fine-tune (or reuse) one full fine-tune per task; a killed run resumes."""
    from modularevo.training.finetune import finetune
    from modularevo.training.finetune_config import FinetuneConfig

    out = Path(args.out)
    folders: dict[str, Path] = {}
    for task in tasks:
        done = finetune_folder(task, out, Path(args.finetunes) if args.finetunes else None)
        if done is None:
            print(f"fine-tuning {args.model} on {task} ...", flush=True)
            cfg = FinetuneConfig.model_validate({
                "model": args.model, "task": task, "strategy": "full", "lr": args.lr,
                "head_lr": args.head_lr, "batch_size": 16, "max_length": args.max_length,
                "epochs": args.epochs, "max_steps": args.max_steps,
                "eval_every": args.eval_every, "patience": args.patience,
                "checkpoint_every": args.eval_every, "seed": args.seed,
                "max_train_examples": args.max_train_examples,
                "max_eval_examples": args.max_ft_eval_examples,
                "eval_at_start": not args.quick,  # quick: a few steps must move the weights
                "output_dir": str(out / "finetunes" / task), "progress": False,
            })  # fmt: skip
            finetune(cfg)
            done = out / "finetunes" / task / "model"
        folders[task] = done
    return folders


def load_setup(args: argparse.Namespace, folders: Mapping[str, Path]) -> Setup:
    """Load the fine-tuned classifiers (templates), the base backbone and the task data."""
    from modularevo.data import load_dataset
    from modularevo.models.load import load_model

    caps = {"search": args.search_examples, "validation": args.search_examples,
            "test": args.test_examples}  # fmt: skip
    shared, heads, templates, data = {}, {}, {}, {}
    base: State | None = None
    for task, folder in folders.items():
        model, tok = load_model(str(folder), "classifier")
        prefixes = head_prefixes(model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        shared[task] = {k: v for k, v in state.items() if not is_head(k, prefixes)}
        heads[task] = {k: v for k, v in state.items() if is_head(k, prefixes)}
        templates[task] = model.eval()
        data[task] = prepare_task(
            task, load_dataset(task), tok, max_length=args.max_length, caps=caps
        )
        if base is None:
            torch.manual_seed(args.seed)
            pre, _ = load_model(args.model, "classifier", num_labels=data[task].num_labels)
            base = {k: v.detach().clone() for k, v in pre.state_dict().items()
                    if not is_head(k, head_prefixes(pre))}  # fmt: skip
    assert base is not None
    missing = sorted(set(base) ^ set(next(iter(shared.values()))))
    if missing:
        raise SystemExit(f"the fine-tunes and {args.model!r} do not share tensors: {missing[:5]}")
    ev = TaskEvaluator(data, templates, batch_size=64)
    return Setup(base, shared, heads, ev, data, {t: str(f) for t, f in folders.items()})
