"""``modularevo finetune CONFIG [key=value ...]``: a thin shell over :func:`modularevo.finetune`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from modularevo.config import load_config
from modularevo.training.finetune_config import FinetuneConfig

console = Console()


def finetune_cmd(
    config: Path = typer.Argument(..., help="Fine-tuning config (configs/finetune/*.yaml)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. lr=1e-4."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check config, model, dataset and module names; load nothing."
    ),
) -> None:
    """Fine-tune a classifier inside a module (strategy module), in full, or with LoRA.

    Under several processes launch it with ``accelerate launch -m modularevo.cli.main finetune``.
    """
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.training.finetune_io import check_inputs

    cfg = load_config(FinetuneConfig, config, overrides or [])
    check_inputs(cfg, dataset=dry_run, model=dry_run)  # a run checks them as it loads them
    if dry_run:
        console.print_json(cfg.model_dump_json())
        return
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.training.finetune import finetune

    res = finetune(cfg)
    m = res.metrics
    console.print(
        f"[green]done[/] ({cfg.strategy}, {m['steps']} steps, best step {m['best_step']}): "
        f"val acc {m['validation']['accuracy']:.4f} F1 {m['validation']['macro_f1']:.4f}, "
        f"test acc {m['test']['accuracy']:.4f} F1 {m['test']['macro_f1']:.4f} -> "
        f"{escape(str(res.model_dir))}"
    )
