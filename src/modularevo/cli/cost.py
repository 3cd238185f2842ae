"""``modularevo cost CONFIG``: dense model vs module, params/FLOPs/disk/latency/memory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from modularevo.config import load_config
from modularevo.cost.config import CostConfig
from modularevo.errors import ConfigError

console = Console()


def cost_cmd(
    args: list[str] = typer.Argument(
        None, help="CONFIG (configs/cost/*.yaml) then key=value overrides, e.g. repeats=20."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (or as CONFIG)."),
) -> None:
    """Measure the dense model and the module interleaved in one run; table, plot and JSON."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.deploy.runner import run_cost

    args = list(args or [])
    if config is None and args and "=" not in args[0]:
        config = Path(args.pop(0))
    if config is None:
        raise ConfigError(
            ["no config given; run `modularevo cost configs/cost/<name>.yaml [key=value ...]`"]
        )
    cfg = load_config(CostConfig, config, args)
    table, out = run_cost(cfg)
    console.print(table)
    console.print(f"wrote {escape(str(out / 'cost.json'))} and {escape(str(out / 'cost.png'))}")
