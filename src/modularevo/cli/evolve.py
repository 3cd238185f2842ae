"""``modularevo evolve CONFIG [key=value ...]``: multi-round evolution with every strategy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console

from modularevo.utils.atomic import claim_output

console = Console()


def print_summary(run: Path, seconds: float) -> None:
    """Print the last round's figures with their 95% intervals, a reading, and the report."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.evolution.verdicts import summary_lines

    data = json.loads((run / "report" / "report.json").read_text("utf-8"))
    for line in summary_lines(data):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # no wrapped rows
    console.print(f"report: {run / 'report' / 'report.md'}", markup=False, soft_wrap=True)
    plots = [run / "report" / p for p in data.get("plots", [])]
    if plots:  # one line each, never wrapped, so a path can be copied whole
        for p in plots:
            console.print(f"plot: {p}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wall time: {seconds / 60:.1f} min")


def evolve_cmd(
    config: Path = typer.Argument(..., help="YAML config, e.g. configs/evolve/paper_minilm.yaml."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. rounds=2."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
) -> None:
    """Fine-tune every task, merge, evaluate; repeat for each round (resumes a killed run)."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.evolution.loop import as_config, evolve

    extra = ["progress=false"] if no_progress else []
    t0 = time.perf_counter()
    cfg = as_config(config, [*(overrides or []), *extra])
    with claim_output(Path(cfg.output_dir)):  # one run per folder; a second is refused
        run = evolve(cfg)
    print_summary(run, time.perf_counter() - t0)
