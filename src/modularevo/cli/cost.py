"""``modularevo cost``: dense model vs module, params/FLOPs/disk/latency/memory side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from modularevo.config import load_config
from modularevo.cost.config import CostConfig

console = Console()


def cost_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config (configs/cost/*.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. repeats=20"),
) -> None:
    """Measure the dense model and the module interleaved in one run; table, plot and JSON."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.deploy.runner import run_cost

    cfg = load_config(CostConfig, config, overrides or [])
    table, out = run_cost(cfg)
    console.print(table)
    console.print(f"wrote {out / 'cost.json'} and {out / 'cost.png'}")
