"""``modularevo analyze MODULE... --out DIR``: thin shell over ``analyze_modules``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def analyze_cmd(
    modules: list[Path] = typer.Argument(..., help="Module files (module-*.safetensors)."),
    out: Path = typer.Option(Path("runs/analysis"), "--out", help="Folder for JSON and plots."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random-mask twins."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write analysis.json only."),
) -> None:
    """Density per layer, overlaps, and domain loss of each module vs dense and its random twin.

    The base model, corpus and objective are read from each module's run config.
    """
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.modules.analysis import analyze_modules

    report = analyze_modules(modules, out_dir=out, seed=seed, plots=not no_plots)
    for label, e in report["modules"].items():
        loss = e.get("loss")
        tail = (
            f"loss dense {loss['dense']:.3f} module {loss['module']:.3f} "
            f"random twin {loss['random_twin']:.3f}"
            if loss
            else "no loss evaluated"
        )
        console.print(f"{label}: density {e['density']:.4f}; {tail}")
    console.print(f"[green]wrote[/] {out / 'analysis.json'}")
