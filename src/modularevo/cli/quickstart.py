"""``modularevo quickstart``: modularize, fine-tune in modules, merge, compare (minutes, CPU)."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from modularevo.cli.evolve import print_summary

console = Console()


def quickstart_cmd(
    output_dir: str = typer.Option("runs/quickstart", "--out", help="Run folder (resumed)."),
    tasks: list[str] = typer.Option(None, "--task", help="Task to use (repeat); default two."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Run ModularEvo end to end on MiniLM and two offline tasks, print the comparison."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.evolution.quickstart import quickstart, quickstart_config

    cfg = quickstart_config(tasks=tasks or None, output_dir=output_dir)
    console.print(
        f"[bold]quickstart[/]: {cfg.model} on {', '.join(cfg.tasks)}; strategies "
        f"{', '.join(cfg.strategies)}; run folder {output_dir}"
    )
    t0 = time.perf_counter()
    run = quickstart(tasks=cfg.tasks, output_dir=output_dir, progress=not no_progress)
    print_summary(run, time.perf_counter() - t0)
