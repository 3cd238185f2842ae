"""Measure what an EMoE model keeps of its dense FFNs on real inputs (arXiv 2310.10908).

For every EMoE layer, the layer's input is captured during one forward pass of the
EMoE model, and the FFN output with the top-k experts (``W1 (h * m) + b1``) is
compared with the dense FFN output (``W1 h + b1``) over the non-padding tokens.
The whole-model output is compared with the dense model (all layers at k = E).

Example:
    >>> report = inspect_emoe(model, tok, ["a sentence", "another one"])  # doctest: +SKIP
    >>> report.layers[0].norm_kept  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modularevo.emoe.convert import emoe_layers, find_ffn_sites
from modularevo.emoe.layer import EMoEFFN
from modularevo.emoe.split import topk_experts
from modularevo.errors import InputError

DEFAULT_TEXTS: tuple[str, ...] = (
    "The court dismissed the appeal because the filing deadline had passed.",
    "Solve for x: three times x plus seven equals twenty-two.",
    "A quick brown fox jumps over the lazy dog near the river bank.",
    "The new vaccine reduced hospital admissions by almost forty percent.",
    "def add(a, b): return a + b  # a tiny Python function",
    "Stock markets fell sharply after the central bank raised interest rates.",
)


@dataclass(frozen=True)
class LayerReport:
    """What one EMoE layer keeps of its dense FFN, averaged over real tokens.

    Attributes:
        index: FFN layer index.
        experts: E.
        top_k: k.
        expert_size: neurons per expert.
        cluster_sizes: sizes found by the balanced clustering (all equal), if known.
        tokens: number of non-padding tokens measured.
        norm_kept: mean over tokens of ||top-k output|| / ||dense output||.
        rel_error: mean over tokens of ||top-k output - dense output|| / ||dense output||.
        cosine: mean cosine between top-k and dense FFN outputs.
        activation_kept: share of the total |activation| mass on the selected experts.
        expert_load: how many tokens selected each expert.
    """

    index: int
    experts: int
    top_k: int
    expert_size: int
    cluster_sizes: list[int] | None
    tokens: int
    norm_kept: float
    rel_error: float
    cosine: float
    activation_kept: float
    expert_load: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class EMoEReport:
    """Per-layer reports and the cosine between EMoE and dense model outputs."""

    layers: list[LayerReport]
    output_cosine: float


@torch.no_grad()
def inspect_emoe(
    model: nn.Module, tokenizer: Any, texts: list[str] | None = None, *, max_length: int = 64
) -> EMoEReport:
    """Measure how much of the dense FFN output the top-k experts keep.

    Args:
        model: a model with EMoE layers (see ``emoe_convert`` / ``load_emoe``).
        tokenizer: its tokenizer.
        texts: input sentences; default :data:`DEFAULT_TEXTS`.
        max_length: truncate inputs to this many tokens.

    Returns:
        The :class:`EMoEReport`.

    Raises:
        InputError: if the model has no EMoE layer or no tokenizer is given.
    """
    layers = emoe_layers(model)
    if not layers:
        raise InputError("the model has no EMoE layer; convert it with emoe_convert first")
    if tokenizer is None:
        raise InputError("inspect needs the model's tokenizer; save it beside the model")
    batch = tokenizer(
        list(texts or DEFAULT_TEXTS), return_tensors="pt", padding=True,
        truncation=True, max_length=max_length,
    )  # fmt: skip
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    keep = batch["attention_mask"].bool()  # (batch, seq)
    was_training = model.training
    model.eval()
    try:
        with _capture_inputs(layers) as inputs:
            sparse_out = _main_output(model(**batch))
        with _all_experts(layers):
            dense_out = _main_output(model(**batch))
    finally:
        model.train(was_training)
    downs = {s.index: model.get_submodule(s.down) for s in find_ffn_sites(model)}
    reports = [
        _layer_report(i, layer, downs[i], inputs[i][keep]) for i, layer in sorted(layers.items())
    ]
    mask = keep if sparse_out.dim() == 3 else torch.ones(sparse_out.shape[:1], dtype=torch.bool)
    cos = F.cosine_similarity(sparse_out[mask].float(), dense_out[mask].float(), dim=-1)
    return EMoEReport(layers=reports, output_cosine=float(cos.mean()))


def _main_output(out: Any) -> Tensor:
    for name in ("last_hidden_state", "logits"):
        value = getattr(out, name, None)
        if isinstance(value, Tensor):
            return value
    if isinstance(out, Tensor):
        return out
    raise InputError(f"cannot find last_hidden_state or logits in {type(out).__name__}")


@contextlib.contextmanager
def _capture_inputs(layers: dict[int, EMoEFFN]) -> Iterator[dict[int, Tensor]]:
    captured: dict[int, Tensor] = {}

    def hook_for(index: int) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            captured[index] = args[0].detach()

        return hook

    handles = [layer.register_forward_pre_hook(hook_for(i)) for i, layer in layers.items()]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _all_experts(layers: dict[int, EMoEFFN]) -> Iterator[None]:
    """Temporarily select every expert (k = E): the dense model."""
    saved = {i: layer.top_k for i, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.top_k = layer.n_experts
        yield
    finally:
        for i, layer in layers.items():
            layer.top_k = saved[i]


def _layer_report(index: int, layer: EMoEFFN, down: nn.Module, x: Tensor) -> LayerReport:
    """Compare dense and top-k FFN outputs on token inputs ``x`` (tokens, d)."""
    h = layer.hidden(x)  # (tokens, d_ff)
    m = layer.expert_mask(x).to(h.dtype)
    dense, sparse = down(h).float(), down(h * m).float()  # (tokens, d)
    dense_norm = dense.norm(dim=-1).clamp_min(1e-12)
    chosen = topk_experts(layer.router_logits(x), layer.top_k)  # (tokens, k)
    load = torch.bincount(chosen.reshape(-1), minlength=layer.n_experts)
    return LayerReport(
        index=index,
        experts=layer.n_experts,
        top_k=layer.top_k,
        expert_size=layer.expert_size,
        cluster_sizes=layer.cluster_sizes,
        tokens=int(x.shape[0]),
        norm_kept=float((sparse.norm(dim=-1) / dense_norm).mean()),
        rel_error=float(((sparse - dense).norm(dim=-1) / dense_norm).mean()),
        cosine=float(F.cosine_similarity(sparse, dense, dim=-1).mean()),
        activation_kept=float((h * m).abs().sum() / h.abs().sum().clamp_min(1e-12)),
        expert_load=load.tolist(),
    )
