"""``modularevo emoe``: turn dense FFNs into Emergent MoE layers and inspect them.

EMoE, arXiv 2310.10908. Examples::

    modularevo emoe convert minilm runs/minilm-emoe --experts 16 --top-k 4 --layers last2
    modularevo emoe convert ./my-bert runs/bert-emoe -E 64 -k 16 --layers 10
    modularevo emoe convert minilm runs/x --config emoe.yaml --top-k 8   # flags override YAML
    modularevo emoe inspect runs/minilm-emoe --text "A sentence." --text "Another one."
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from modularevo.errors import ConfigError

if TYPE_CHECKING:
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.emoe.report import EMoEReport

app = typer.Typer(help="Emergent MoE (arXiv 2310.10908): FFNs -> experts.", no_args_is_help=True)
console = Console()


def parse_layers(text: str) -> list[int] | str:
    """``"10,11"`` -> [10, 11]; ``"last2"`` / ``"all"`` stay strings (validated later).

    Raises:
        ConfigError: for a list with a part that is not an integer.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1 and not parts[0].lstrip("-").isdigit():
        return parts[0]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ConfigError([f"--layers: expected '10,11', 'last2' or 'all', got {text!r}"]) from None


@app.command("convert")
def convert_cmd(
    model: str = typer.Argument(..., help="Embedded model name (minilm, tiny-bert) or HF folder."),
    out: Path = typer.Argument(..., help="Output folder (dense HF model + emoe.json)."),
    experts: int = typer.Option(
        None, "--experts", "-E", help="Experts per FFN [16]; divides d_ff."
    ),
    top_k: int = typer.Option(None, "--top-k", "-k", help="Experts kept per token [4], <= E."),
    layers: str = typer.Option(None, help="FFN layers: '10,11', 'last2' [default] or 'all'."),
    seed: int = typer.Option(None, help="Seed of the balanced k-means initialisation [0]."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML EMoEConfig; flags override."),
    kind: str = typer.Option(None, help="How to load MODEL (encoder, causal_lm, classifier...)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Cluster FFN keys into equal-size experts and save the EMoE model."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.emoe.store import convert_pretrained

    cfg = _settings(config, experts=experts, top_k=top_k, layers=layers, seed=seed)
    meta = convert_pretrained(model, out, cfg, kind=kind, overwrite=overwrite)
    size = meta["per_layer"][str(meta["layers"][0])]["expert_size"]
    console.print(
        f"wrote {out}: layers {meta['layers']}, {meta['experts']} experts of {size} neurons, "
        f"top-{meta['top_k']}; converted in {meta['seconds']:.1f}s"
    )


def _settings(config: Path | None, **flags: object) -> dict[str, object]:
    """The YAML config (if any) with the flags that were given laid over it."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.config.load import load_yaml

    if isinstance(flags.get("layers"), str):
        flags["layers"] = parse_layers(str(flags["layers"]))
    given = {k: v for k, v in flags.items() if v is not None}
    return {**(load_yaml(config) if config else {}), **given}


@app.command("inspect")
def inspect_cmd(
    folder: Path = typer.Argument(..., help="Folder written by `modularevo emoe convert`."),
    text: list[str] = typer.Option(None, "--text", "-t", help="Input sentence (repeatable)."),
    max_length: int = typer.Option(64, help="Truncate inputs to this many tokens."),
) -> None:
    """Experts per layer, cluster sizes, and how much of the dense FFN output top-k keeps."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.emoe.report import inspect_emoe
    from modularevo.emoe.store import load_emoe

    model, tok = load_emoe(folder)
    report = inspect_emoe(model, tok, text or None, max_length=max_length)
    console.print(_report_table(report, str(folder)))
    console.print(f"model output cosine, EMoE vs dense: {report.output_cosine:.4f}")


def _report_table(report: EMoEReport, folder: str) -> Table:
    table = Table(title=f"EMoE layers of {folder} ({report.layers[0].tokens} tokens)")
    cols = ("layer", "E", "k", "expert size", "cluster sizes", "norm kept", "rel. error",
            "cosine", "|act| kept", "busiest / idlest expert")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for r in report.layers:
        sizes = sorted(set(r.cluster_sizes or [r.expert_size]))
        table.add_row(
            str(r.index), str(r.experts), str(r.top_k), str(r.expert_size), str(sizes),
            f"{r.norm_kept:.3f}", f"{r.rel_error:.3f}", f"{r.cosine:.3f}",
            f"{r.activation_kept:.3f}", f"{max(r.expert_load)} / {min(r.expert_load)}",
        )  # fmt: skip
    return table
