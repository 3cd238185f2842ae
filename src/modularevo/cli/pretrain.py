"""``modularevo pretrain CONFIG [key=value ...]``: pretrain the small GPT-Neo default."""

from __future__ import annotations

import typer
from rich.console import Console

from modularevo.config import load_config
from modularevo.training.pretrain_config import PretrainConfig


def pretrain_cmd(
    config: str = typer.Argument(..., help="YAML config, e.g. configs/pretrain/gptneo_small.yaml."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. steps=50."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Pretrain a GPT-Neo decoder on the offline corpora and cache it as an HF folder."""
    # deferred: pretraining imports torch; `modularevo --help` stays fast without it
    from modularevo.training.pretrain import output_dir, pretrain

    extra = ["progress=false"] if no_progress else []
    cfg = load_config(PretrainConfig, config, [*(overrides or []), *extra])
    metrics = pretrain(cfg, overwrite=overwrite)
    Console().print(
        f"[bold]{cfg.name}[/]: {metrics['params']:,} params, validation perplexity "
        f"{metrics['val_ppl']:.2f}, trained {metrics['train_seconds']:.0f} s "
        f"on {metrics['threads']} thread(s) -> {output_dir(cfg)}"
    )
