"""``modularevo evaluate MODEL TASK``: accuracy and macro-F1 of a classifier on one split,
or greedy exact match of a causal LM on a generation task."""

from __future__ import annotations

import json

import typer
from rich.console import Console

console = Console()


def evaluate_cmd(
    model: str = typer.Argument(..., help="Fine-tuned model folder (RUN/model) or model name."),
    task: str = typer.Argument(..., help="Dataset name, e.g. lang-id."),
    split: str = typer.Option("validation", "--split", help="validation (select) or test."),
    max_length: int = typer.Option(128, "--max-length", help="Truncation length in tokens."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples per forward pass."),
    max_examples: int | None = typer.Option(None, "--max-examples", help="First N only."),
    max_new_tokens: int = typer.Option(
        32, "--max-new-tokens", min=1, help="Longest generated answer (generation tasks)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    text_column: str | None = typer.Option(None, help="Text column of a local file."),
    label_column: str | None = typer.Option(None, help="Label column of a local file."),
    label_names: str | None = typer.Option(None, help="Labels in id order, comma-separated."),
) -> None:
    """Evaluate a classifier on one split of a task (a causal LM on a generation task)."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.data import load_dataset
    from modularevo.evaluation.evaluate import evaluate_model

    names = [n.strip() for n in label_names.split(",")] if label_names else None
    columns = {"text_column": text_column, "label_column": label_column, "label_names": names}
    given = {k: v for k, v in columns.items() if v is not None}
    data = load_dataset(task, **given) if given else None
    res = evaluate_model(model, task=task, split=split, max_length=max_length, dataset=data,
                         batch_size=batch_size, max_examples=max_examples,
                         max_new_tokens=max_new_tokens)  # fmt: skip
    if as_json:
        console.print_json(json.dumps(res))
        return
    if res.get("task_type") == "generation":
        lo, hi = res["ci95"]
        console.print(
            f"{task} [{split}]: exact match {res['accuracy']:.4f} (95% CI [{lo:.4f}, {hi:.4f}]), "
            f"answer loss {res['loss']:.4f} ({res['n']} examples)",
            markup=False,
        )
        return
    console.print(
        f"{task} [{split}]: accuracy {res['accuracy']:.4f}, macro-F1 {res['macro_f1']:.4f}, "
        f"loss {res['loss']:.4f} ({res['n']} examples)",
        markup=False,
    )
