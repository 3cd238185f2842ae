"""``modularevo export-onnx``: a classifier folder (dense or extracted) -> ONNX (+ int8)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def export_onnx_cmd(
    model: str = typer.Argument(..., help="Classifier folder (dense or extracted) or model name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    kind: str = typer.Option("classifier", help="How to load the model."),
    num_labels: int = typer.Option(None, help="Classes, for a model without a trained head."),
    quantize: bool = typer.Option(False, help="Also write model.int8.onnx (int8 dynamic)."),
    torchscript: bool = typer.Option(False, help="Use the TorchScript exporter, not dynamo."),
    opset: int = typer.Option(18, help="ONNX opset."),
    atol: float = typer.Option(1e-4, help="Largest allowed |ONNX - PyTorch| logit difference."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Export to ONNX, check the logits in ONNX Runtime, optionally quantize to int8."""
    # deferred: the stage imports torch; `modularevo --help` stays fast without it
    from modularevo.deploy.onnx_export import export_onnx
    from modularevo.deploy.runner import load_any_model

    net, tok = load_any_model(model, kind, num_labels)
    folder = export_onnx(
        net, out, quantize=quantize, opset=opset, dynamo=not torchscript, atol=atol,
        overwrite=overwrite, tokenizer=tok,
    )  # fmt: skip
    console.print(f"wrote {escape(str(folder))}: {escape(_summary(folder))}")


def _summary(folder: Path) -> str:
    info = json.loads((folder / "onnx_export.json").read_text())
    text = f"max |logit diff| vs PyTorch {info['max_abs_logit_diff']:.2g}"
    if "int8_max_abs_logit_diff" in info:
        text += f", int8 {info['int8_max_abs_logit_diff']:.2g}"
    return text
