"""``modularevo merge CONFIG OUT`` and ``modularevo validate CONFIG``.

Thin shells over :func:`modularevo.merge` and :func:`modularevo.merging.apply.make_plan`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modularevo.merging.apply import make_plan, merge
from modularevo.merging.plan import MergePlan, summary

console = Console()


def merge_cmd(
    config: Path = typer.Argument(..., help="Merge recipe (YAML; mergekit recipes work)."),
    out: Path = typer.Argument(..., help="Output folder (an HF model folder)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. seed=3."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for random methods (DARE…)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; read no weights."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Merge the models of a recipe into OUT (written atomically)."""
    if dry_run:
        plan = make_plan(config, overrides=overrides or [], seed=seed)
        try:
            _print_plan(plan)
        finally:
            plan.close()
        return
    path = merge(
        config,
        out,
        overrides=overrides or [],
        seed=seed,
        overwrite=overwrite,
        progress=not no_progress,
    )
    console.print(f"[green]merged[/] into {escape(str(path))}")


def validate_cmd(
    config: Path = typer.Argument(..., help="Merge recipe (YAML)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides."),
) -> None:
    """Check a recipe and its input models (headers only) without merging."""
    plan = make_plan(config, overrides=overrides or [])
    plan.close()
    console.print(
        f"[green]ok[/]: {escape(str(config))} ({plan.method.name}, {len(plan.tasks)} tensors)"
    )


def _print_plan(plan: MergePlan) -> None:
    s = summary(plan)
    table = Table(title=f"merge plan: {s['method']} ({s['paper']})", show_lines=False)
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("dtype out")
    table.add_column("action")
    for t in plan.tasks:
        action = t.action if t.action != "alias" else f"alias of {t.alias_of}"
        table.add_row(t.name, str(list(t.shape)), t.out_info.name, action)
    console.print(table)
    console.print(f"base model: {s['base_model']}")
    console.print(f"models: {', '.join(s['models'])}")
    console.print(f"parameters: {s['params']}")
    console.print(f"backend: {s['backend']}")
    console.print(f"tensors: {s['tensors']}, {s['parameters_total']:,} parameters")
    console.print(f"output size: {s['output_bytes'] / 2**20:.1f} MiB")
    if s["global_threshold_prepass"]:
        console.print("global |τ| thresholds: 2 extra streaming passes over the inputs")
    mem = s["memory_estimate_bytes"] / 2**20
    libs = "numpy" if s["backend"] == "numpy" else "torch"
    console.print(f"working memory: ~{mem:.0f} MiB (plus ~300 MiB for Python and {libs})")
    for note in s["notes"]:
        console.print(f"note: {note}")
