"""ONNX export of classifiers (dense or extracted modules) and ONNX Runtime inference on CPU.

:func:`export_onnx` writes a folder::

    model.onnx          inputs input_ids, attention_mask (int64, batch x seq, both dynamic);
                        output logits (batch x num_labels)
    model.int8.onnx     with ``quantize=True``: int8 dynamic quantization of the weights
                        (onnxruntime.quantization.quantize_dynamic; activations stay fp32)
    onnx_export.json    the export settings and the measured check: the largest
                        |ORT logits - PyTorch logits| on a padded random batch

The check runs right after the export and raises :class:`InputError` when the fp32 graph
differs from the PyTorch module by more than ``atol`` (default 1e-4): an exported folder
reproduces its module's logits or is not written. The int8 graph is an approximation; its
difference is recorded, not enforced.

``onnx`` and ``onnxruntime`` are an optional extra: ``pip install modularevo[deploy]``.

Example:
    >>> folder = export_onnx(model, "runs/minilm-onnx", quantize=True)   # doctest: +SKIP
    >>> sess = ort_session(folder / "model.onnx", threads=1)             # doctest: +SKIP
    >>> logits = ort_logits(sess, input_ids, attention_mask)             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INFO_FILE = "onnx_export.json"
INPUT_NAMES = ("input_ids", "attention_mask")
DEFAULT_ATOL = 1e-4


class LogitsOnly(nn.Module):
    """``model(input_ids, attention_mask) -> logits`` (what the ONNX graph computes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = getattr(out, "logits", None)
        return logits if isinstance(logits, Tensor) else out[0]


def _require_ort() -> Any:
    try:
        # deferred: onnxruntime is the optional `deploy` extra
        import onnxruntime
    except ImportError as exc:
        raise InputError(
            "ONNX export and inference need onnx and onnxruntime: "
            "`pip install modularevo[deploy]` (or `pip install onnx onnxruntime`)"
        ) from exc
    return onnxruntime


def sample_inputs(
    vocab_size: int, *, batch: int = 2, seq: int = 12, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A random batch whose last row is padded (so the check covers the attention mask)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2 :] = 0
    return ids, mask


def _vocab_size(model: nn.Module) -> int:
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    if vocab is None:
        backbone = getattr(model, "backbone", None)
        vocab = getattr(getattr(backbone, "config", None), "vocab_size", None)
    if not vocab:
        raise InputError(f"{type(model).__name__} has no config.vocab_size; pass vocab_size=")
    return int(vocab)


def _export_graph(wrapped: nn.Module, path: Path, example: tuple[Tensor, Tensor], *,
                  opset: int, dynamo: bool) -> None:  # fmt: skip
    if dynamo:
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        shapes = {n: {0: batch, 1: seq} for n in INPUT_NAMES}
        torch.onnx.export(
            wrapped, example, str(path), input_names=list(INPUT_NAMES), output_names=["logits"],
            dynamic_shapes=shapes, opset_version=opset, dynamo=True, verbose=False,
        )  # fmt: skip
        return
    axes = {n: {0: "batch", 1: "seq"} for n in INPUT_NAMES}
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped, example, str(path), input_names=list(INPUT_NAMES), output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
        )  # fmt: skip


def quantize_onnx(src: str | Path, dst: str | Path) -> Path:
    """Int8 dynamic quantization of ``src``'s weights (MatMul/Gemm), written to ``dst``."""
    _require_ort()
    # deferred: onnxruntime is the optional `deploy` extra
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def ort_session(path: str | Path, *, threads: int | None = None) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` (``threads`` intra-op threads; 1 inter-op)."""
    ort = _require_ort()
    if not Path(path).is_file():
        raise InputError(f"no ONNX file at {str(path)!r}; export one with export_onnx")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_logits(session: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits of an exported classifier for one batch (int64 inputs)."""
    feed = {
        "input_ids": input_ids.to(torch.int64).numpy(),
        "attention_mask": attention_mask.to(torch.int64).numpy(),
    }
    return torch.from_numpy(session.run(["logits"], feed)[0])


@torch.inference_mode()
def logit_gap(model: nn.Module, session: Any, input_ids: Tensor, attention_mask: Tensor) -> float:
    """Largest |ORT logits - PyTorch logits| on one batch."""
    ref = LogitsOnly(model).eval()(input_ids, attention_mask).float()
    return float((ort_logits(session, input_ids, attention_mask) - ref).abs().max())


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    quantize: bool = False,
    opset: int = 18,
    dynamo: bool = True,
    atol: float = DEFAULT_ATOL,
    overwrite: bool = False,
    vocab_size: int | None = None,
    tokenizer: Any = None,
) -> Path:
    """Export a classifier (``model(input_ids, attention_mask).logits``) to an ONNX folder.

    Args:
        model: a transformers classifier, an extracted module, or a ``SequenceClassifier``.
        out: the output folder (written atomically).
        quantize: also write ``model.int8.onnx`` (int8 dynamic weight quantization).
        opset: ONNX opset.
        dynamo: use the ``torch.export`` exporter (default); False uses the TorchScript one.
        atol: largest allowed |ORT - PyTorch| logit difference of the fp32 graph.
        overwrite: replace an existing folder.
        vocab_size: token ids of the check batch are drawn below it (default: the config's).
        tokenizer: saved into the folder too (``save_pretrained``), if given.

    Returns:
        The folder.

    Raises:
        InputError: onnxruntime missing, or the exported graph's logits differ by more
            than ``atol``.
    """
    _require_ort()
    was_training = model.training
    wrapped = LogitsOnly(model).eval()
    info: dict[str, Any] = {
        "opset": opset,
        "exporter": "dynamo" if dynamo else "torchscript",
        "inputs": list(INPUT_NAMES),
        "outputs": ["logits"],
        "atol": atol,
    }
    vocab = vocab_size or _vocab_size(model)
    ids, mask = sample_inputs(vocab)
    check_ids, check_mask = sample_inputs(vocab, batch=3, seq=9, seed=1)
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            with torch.no_grad():
                _export_graph(wrapped, tmp / ONNX_FILE, (ids, mask), opset=opset, dynamo=dynamo)
            gap = logit_gap(model, ort_session(tmp / ONNX_FILE), check_ids, check_mask)
            info["max_abs_logit_diff"] = gap
            if not gap <= atol:
                raise InputError(
                    f"the exported ONNX graph's logits differ from the PyTorch model's by {gap:.3g}"
                    f" (> atol {atol:g}); try dynamo={not dynamo} or another opset"
                )
            if quantize:
                quantize_onnx(tmp / ONNX_FILE, tmp / INT8_FILE)
                info["int8_max_abs_logit_diff"] = logit_gap(
                    model, ort_session(tmp / INT8_FILE), check_ids, check_mask
                )
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    finally:
        model.train(was_training)
    log.info("exported %s (max |logit diff| %.2g)", out, info.get("max_abs_logit_diff", -1))
    return Path(out)
