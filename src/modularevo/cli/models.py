"""``modularevo models ls``: the embedded default models and whether they are built."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from modularevo.models.defaults import MODELS, PRETRAIN_COMMAND, models_dir

app = typer.Typer(help="Embedded default models.", no_args_is_help=True)


@app.command("ls")
def ls_cmd() -> None:
    """List the embedded models: name, kind, parameters, where from, built or not."""
    table = Table(title=f"embedded models (cache: {models_dir()})")
    for col in ("name", "kind", "params", "from", "built?"):
        table.add_column(col, justify="right" if col == "params" else "left", no_wrap=col != "from")
    for name, spec in MODELS.items():
        built = "in memory" if spec.tiny else "[green]yes[/]" if spec.built() else "[yellow]no[/]"
        table.add_row(name, spec.kind, f"{spec.params():,}", spec.source, built)
    console = Console()
    console.print(table)
    if not MODELS.get("gptneo-small").built():
        console.print(f"gptneo-small is not built yet; build it with: {PRETRAIN_COMMAND}")
