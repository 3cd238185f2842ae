"""``modularevo extract``: a structured module + its model -> a smaller HF folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def extract_cmd(
    module: Path = typer.Argument(..., help="Structured module file (.safetensors)."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Model folder or name the module belongs to."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output HF folder (written atomically)."),
    kind: str = typer.Option("classifier", help="How to load the model (classifier, encoder ...)."),
    num_labels: int = typer.Option(None, help="Classes, for kind=classifier."),
    lenient: bool = typer.Option(False, help="Bake in zeros outside whole neurons/heads."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
    onnx: Path = typer.Option(None, help="Also export the module to this ONNX folder."),
    quantize: bool = typer.Option(False, help="With --onnx: also write model.int8.onnx."),
) -> None:
    """Remove the FFN neurons and attention heads the module drops; save a loadable folder."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.deploy.extract import extract_module, save_extracted
    from modularevo.deploy.runner import load_any_model
    from modularevo.modules.io import load_module

    net, tok = load_any_model(model, kind, num_labels)
    mask = load_module(module, params=net.named_parameters(), allow_modified=True)
    small = extract_module(net, mask, strict=not lenient)
    save_extracted(small, out, tokenizer=tok, overwrite=overwrite, source=(model, str(module)))
    cfg = getattr(small, "config", None)
    console.print(
        f"wrote {escape(str(out))}: FFN sizes {getattr(cfg, 'ffn_sizes', '?')}, "
        f"heads {getattr(cfg, 'head_counts', '?')}"
    )
    if onnx is not None:
        # deferred: onnx/onnxruntime are the optional `deploy` extra
        from modularevo.deploy.onnx_export import export_onnx

        export_onnx(small, onnx, quantize=quantize, overwrite=overwrite, tokenizer=tok)
        console.print(f"wrote {escape(str(onnx))} (ONNX, logits checked against PyTorch)")
