"""``modularevo modularize CONFIG [key=value ...]``: thin shell over ``modularize``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from modularevo.config import load_config
from modularevo.training.modularize_config import ModularizeConfig

console = Console()


def modularize_cmd(
    config: Path = typer.Argument(..., help="Modularize config (configs/modularize/*.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. alpha=50."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the config only."),
    seed: int | None = typer.Option(None, "--seed", help="Override the config's seed."),
) -> None:
    """Learn a domain module (a binary mask over the frozen model) and write module files.

    Under several processes launch it with ``accelerate launch -m modularevo.cli.main modularize``.
    """
    extra = [*(overrides or []), *([f"seed={seed}"] if seed is not None else [])]
    cfg = load_config(ModularizeConfig, config, extra)
    if dry_run:
        # deferred: datasets/transformers are heavy; only a dry run checks names up front
        from modularevo.data import check_dataset_name
        from modularevo.models.load import resolve_model

        check_dataset_name(cfg.dataset)  # a misspelt name fails here, with did-you-mean
        resolve_model(cfg.model)
        console.print_json(cfg.model_dump_json())
        return
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.training.modularizer import modularize

    paths = modularize(cfg)
    missing = [lv for lv in cfg.snapshot_levels if lv not in paths]
    if missing:
        console.print(
            f"[yellow]level(s) {missing} not reached[/] in {cfg.steps} steps; raise steps "
            f"(the run resumes from {cfg.output_dir / 'checkpoint.pt'}), alpha or lr"
        )
    for level, path in sorted(paths.items(), reverse=True):
        console.print(f"[green]module[/] kept <= {level:.2f}: {path}")
