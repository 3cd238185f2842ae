"""``modularevo analyze MODULE... --out DIR`` and ``modularevo random-module MODULE OUT``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def analyze_cmd(
    modules: list[Path] = typer.Argument(..., help="Module files (module-*.safetensors)."),
    out: Path = typer.Option(Path("runs/analysis"), "--out", help="Folder for JSON and plots."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random twins."),
    max_batches: int = typer.Option(16, "--batches", help="Evaluation batches per corpus."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write analysis.json only."),
) -> None:
    """Domain x corpus loss matrix vs dense and random twins (one frozen head), verdicts, seeds."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.modules.analysis import analyze_modules

    rows = 1 + 2 * len(modules)  # dense, each module, each module's random twin
    what = (f"analyzing {len(modules)} module(s): {rows} rows x each domain's corpus, "
            f"{max_batches} batches each")  # fmt: skip
    with err_console.status(what + " ..."):  # a spinner on a terminal, nothing in a log
        r = analyze_modules(modules, out_dir=out, seed=seed, max_batches=max_batches,
                            plots=not no_plots)  # fmt: skip
    cols = list(r["corpora"])
    console.print("row".ljust(34) + "".join(c[:12].rjust(13) for c in cols))
    for row, vals in r["loss_matrix"].items():
        console.print(row[:33].ljust(34) + "".join(f"{vals[c]:13.4f}" for c in cols))
    for label, v in r["verdicts"].items():
        t = v["module_minus_twin"]
        console.print(f"{label}: module - twin {t['diff']:+.4f} [{t['lo']:+.4f}, {t['hi']:+.4f}] "
                      f"(n={t['n']}); best on own corpus: {v['best_on_own_corpus']}; "
                      f"domain-specific: {'yes' if v['domain_specific'] else 'no'}")  # fmt: skip
    s = r["seed_stability"]["summary"]
    console.print(f"Jaccard same domain {s['same_domain']['mean_jaccard']} "
                  f"vs different domain {s['different_domain']['mean_jaccard']}")  # fmt: skip
    console.print(f"[green]wrote[/] {out / 'analysis.json'}")


def random_module_cmd(
    module: Path = typer.Argument(..., help="A learned module file."),
    out: Path = typer.Argument(..., help="Where to write the random module file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draw."),
) -> None:
    """Write the random control of MODULE: same per-layer density, seeded, same file format."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.modules.analysis import random_module
    from modularevo.modules.io import load_module, save_module

    learned = load_module(module)
    path = save_module(random_module(learned, seed=seed), out)
    console.print(f"[green]random module[/] density {learned.density():.4f} seed {seed}: {path}")
