"""``modularevo extract-lora BASE FINETUNED OUT --rank R``: a fine-tune's task vector as a
PEFT LoRA adapter (truncated SVD per weight matrix). Thin shell over
:func:`modularevo.merging.lora.extract_lora`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def extract_lora_cmd(
    base: Path = typer.Argument(..., help="Base model folder (what the adapter applies to)."),
    finetuned: Path = typer.Argument(..., help="Fine-tuned model folder (same tensor names)."),
    out: Path = typer.Argument(..., help="Adapter folder to write (PEFT format, atomically)."),
    rank: int = typer.Option(..., "--rank", "-r", help="LoRA rank r per weight matrix."),
    lora_only: bool = typer.Option(
        False, "--lora-only", help="Leave changed biases and LayerNorms out of the adapter."
    ),
    embedding: list[str] = typer.Option(
        None, "--embedding", help="A module to treat as an embedding table (repeatable)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Write a rank-R LoRA adapter of FINETUNED - BASE that peft.PeftModel loads on BASE."""
    # deferred: the extraction imports torch; `modularevo --help` stays fast without it
    from modularevo.merging.lora import extract_lora

    r = extract_lora(base, finetuned, out, rank=rank, embeddings=embedding or (),
                     lora_only=lora_only, overwrite=overwrite)  # fmt: skip
    console.print(
        f"wrote {escape(str(r.path))}: {r.matrices} LoRA matrices (rank <= {r.rank}), "
        f"{r.full_tensors} full tensors, relative error {r.relative_error:.3g}"
        + (f"; left out (not in the base): {len(r.left_out)}" if r.left_out else "")
    )
