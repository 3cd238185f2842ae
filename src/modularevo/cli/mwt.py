"""``modularevo mwt``: train a CNN with MwT, extract a sub-task module, evaluate it.

modularevo mwt train --data digits runs/mwt model=test_vgg epochs=3
modularevo mwt extract runs/mwt --classes 0,1,2 runs/mwt-012
modularevo mwt eval runs/mwt-012
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
app = typer.Typer(
    help="MwT (arXiv:2306.09376): modular CNN training and per-class module reuse.",
    no_args_is_help=True,
)


@app.command("train")
def train_cmd(
    out: Path = typer.Argument(..., help="Run folder to write (atomically)."),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. alpha=1.0."),
    data: str | None = typer.Option(None, "--data", help="Image set: digits, mnist, ..."),
    config: Path | None = typer.Option(None, "--config", "-c", help="MwT YAML config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the config only."),
) -> None:
    """Train a gated CNN with the MwT loss (CE + alpha*cohesion + beta*coupling losses)."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.mwt.config import load_mwt_config

    extra = [*([f"data={data}"] if data else []), *(overrides or [])]
    cfg = load_mwt_config(config, extra)
    if dry_run:
        console.print_json(cfg.model_dump_json())
        return
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.mwt.train import train_mwt

    run = train_mwt(cfg, out, overwrite=overwrite)
    console.print(_train_summary(run), soft_wrap=True)


def _train_summary(run: Path) -> str:
    """The end-of-run line: test and validation accuracy, kernel retention, where it went."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    test = next((r for r in rows if r.get("split") == "test"), {})
    last = next((r for r in reversed(rows) if "val_acc" in r), {})
    parts = [f"test acc {test['acc']:.4f}" if "acc" in test else "",
             f"val acc {last['val_acc']:.4f}" if "val_acc" in last else "",
             f"kernel retention {last['kernel_rate']:.4f} (mean fraction of kernels a sample "
             "keeps, last epoch)" if "kernel_rate" in last else "",
             f"{test.get('step', last.get('step', '?'))} steps"]  # fmt: skip
    return (
        f"[green]done[/]: {', '.join(p for p in parts if p)} -> {escape(str(run))} "
        f"(curves.png, metrics.jsonl)"
    )


@app.command("extract")
def extract_cmd(
    run: Path = typer.Argument(..., help="Run folder of `mwt train`."),
    out: Path = typer.Argument(..., help="Module folder to write (atomically)."),
    classes: str = typer.Option(..., "--classes", help="Comma-separated class ids, e.g. 0,1,2."),
    threshold: float | None = typer.Option(None, help="Kernel-keeping threshold (run's default)."),
    drop_gates: bool = typer.Option(False, help="Drop the gate generators like the reference."),
    finetune_epochs: int = typer.Option(0, help="Fine-tune the module (pick epoch on validation)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Compose the per-class modules of CLASSES into a smaller CNN; report KRR and accuracy."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.mwt.reuse import extract_module, parse_classes

    report = extract_module(run, parse_classes(classes), out, threshold=threshold,
                            keep_gates=not drop_gates, finetune_epochs=finetune_epochs,
                            overwrite=overwrite)  # fmt: skip
    console.print(
        f"[green]module[/] {report['classes']} -> {escape(str(out))}: KRR {report['krr']:.4f}, "
        f"test acc {report['test_acc']:.4f} (full model {report['full_model_test_acc']:.4f})"
    )


@app.command("eval")
def eval_cmd(
    module: Path = typer.Argument(..., help="Module folder of `mwt extract`."),
    split: str = typer.Option("test", help="Split to evaluate on: test or validation."),
) -> None:
    """Accuracy and kernel retention rate of a saved module on its classes."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.mwt.reuse import evaluate_module

    console.print_json(data=evaluate_module(module, split=split))
