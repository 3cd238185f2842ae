"""Convert dense FFNs of BERT-family, GPT-2, GPT-Neo and Llama-family models into EMoE layers.

EMoE (arXiv 2310.10908): for each chosen FFN layer, cluster the L2-normalised key
rows into E equal-size experts (balanced k-means), permute the neurons so expert e
is the block [e*s, (e+1)*s) — the dense function is unchanged by this — compute the
avg-k gates, and swap the FFN module for an :class:`~modularevo.emoe.layer.EMoEFFN`.
In a gated FFN (Llama, Qwen, Gemma: down(act(gate x) * up x)) the keys are the gate
rows, and each expert is the same neuron block of gate, up and down together.

Example:
    >>> from modularevo.models import load_model
    >>> model, tok = load_model("minilm", "encoder")  # doctest: +SKIP
    >>> cfg = EMoEConfig(experts=16, top_k=4, layers="last2")
    >>> model = emoe_convert(model, cfg)  # doctest: +SKIP
    >>> sorted(emoe_layers(model))  # doctest: +SKIP
    [4, 5]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.emoe.config import EMoEConfig, as_config, resolve_layers
from modularevo.emoe.layer import LAYOUTS, EMoEFFN, FFNLayout, ffn_keys, is_conv1d
from modularevo.emoe.split import (
    avg_k_gates,
    balanced_kmeans,
    check_divisible,
    cluster_sizes,
    expert_permutation,
    normalize_rows,
)
from modularevo.errors import InputError
from modularevo.models.arch import describe

log = logging.getLogger(__name__)

PAPER = "https://arxiv.org/abs/2310.10908"


@dataclass(frozen=True)
class FFNSite:
    """One FFN of a model that EMoE can convert.

    Attributes:
        index: 0-based FFN layer index (the ``layers`` numbering).
        name: qualified name of the module that is replaced (e.g.
            ``encoder.layer.10.intermediate`` or ``transformer.h.3.mlp``).
        layout: attribute names of that module's parts.
        up: qualified name of the key layer W0.
        down: qualified name of the value layer W1.
        mul: qualified name of a gated FFN's linear branch (``up_proj``); ``up`` is then
            the gate (``gate_proj``).
    """

    index: int
    name: str
    layout: FFNLayout
    up: str
    down: str
    mul: str | None = None


def find_ffn_sites(model: nn.Module) -> list[FFNSite]:
    """All FFN layers of ``model`` in order, with the module EMoE would replace.

    Raises:
        InputError: for an FFN module whose layout is not BERT-intermediate, GPT-2/GPT-Neo
            MLP, a gated gate/up/down MLP (Llama family) or up/act/down.
    """
    info = describe(model)
    modules = dict(model.named_modules())
    sites = []
    for index, ffn in enumerate(info.ffn):
        key, mul = (ffn.gate, ffn.up) if ffn.gate is not None else (ffn.up, None)
        parent_name = key.rsplit(".", 1)[0]
        layout = _match_layout(
            modules[parent_name], modules[key], modules[ffn.down], modules[mul] if mul else None
        )
        if layout is None:
            raise InputError(
                f"cannot tell the parts of FFN module {parent_name!r} "
                f"({type(modules[parent_name]).__name__}); expected attributes "
                f"{[lay.__dict__ for lay in LAYOUTS]}"
            )
        sites.append(FFNSite(index, parent_name, layout, key, ffn.down, mul))
    if not sites:
        raise InputError(
            f"found no FFN layers in {type(model).__name__} (family {info.family!r}); "
            "pass a BERT-family, GPT-2, GPT-Neo or Llama-family model"
        )
    return sites


def _match_layout(
    parent: nn.Module, up: nn.Module, down: nn.Module, mul: nn.Module | None
) -> FFNLayout | None:
    if isinstance(parent, EMoEFFN):
        return parent.layout
    for lay in LAYOUTS:
        if getattr(parent, lay.up, None) is not up or not hasattr(parent, lay.act):
            continue
        if (lay.mul is None) != (mul is None):
            continue
        if lay.mul is not None and getattr(parent, lay.mul, None) is not mul:
            continue
        if lay.down is None or getattr(parent, lay.down, None) is down:
            return lay
    return None


def emoe_layers(model: nn.Module) -> dict[int, EMoEFFN]:
    """The EMoE layers of ``model`` by FFN layer index (empty for a dense model)."""
    out = {}
    for site in find_ffn_sites(model):
        module = model.get_submodule(site.name)
        if isinstance(module, EMoEFFN):
            out[site.index] = module
    return out


@torch.no_grad()
def permute_ffn_(
    up: nn.Module, down: nn.Module, perm: Tensor, mul: nn.Module | None = None
) -> None:
    """Reorder FFN neurons in place: new neuron i = old neuron ``perm[i]``.

    Permutes the key rows and bias of ``up`` (and of a gated FFN's linear branch
    ``mul``) and the value columns of ``down`` (nn.Linear or Conv1D), which leaves the
    FFN function unchanged. Parameters keep their identity, so optimizers and
    references stay valid.
    """
    for layer in (up, mul) if mul is not None else (up,):
        w_up: Tensor = layer.weight  # type: ignore[assignment]
        w_up.copy_(w_up[:, perm] if is_conv1d(layer) else w_up[perm])
        b_up = getattr(layer, "bias", None)
        if isinstance(b_up, Tensor):
            b_up.copy_(b_up[perm])
    w_down: Tensor = down.weight  # type: ignore[assignment]
    w_down.copy_(w_down[perm] if is_conv1d(down) else w_down[:, perm])


def emoe_convert(
    model: nn.Module, cfg: EMoEConfig | dict[str, Any] | None = None, **settings: Any
) -> nn.Module:
    """Turn the chosen dense FFN layers of ``model`` into EMoE layers, in place.

    Args:
        model: a BERT-family (BertModel, BertFor*, MiniLM), GPT-2, GPT-Neo or Llama-family
            (Llama, Qwen2, Gemma 3: gated FFN) model, bare or wrapped (e.g.
            ``SequenceClassifier``).
        cfg: an :class:`EMoEConfig` (or a dict of its fields).
        **settings: overrides of single fields, e.g. ``experts=16, top_k=4, layers=[10, 11]``.

    Returns:
        The same model object, converted. With ``top_k == experts`` it computes exactly
        what the dense model computed.

    Raises:
        ConfigError: for invalid settings.
        InputError: for d_ff not divisible by E, an unknown or already converted layer,
            or an unsupported architecture.
    """
    config = as_config(cfg, **settings)
    sites = find_ffn_sites(model)
    chosen = resolve_layers(config.layers, len(sites))
    for index in chosen:  # check every layer before changing any weights
        site = sites[index]
        if isinstance(model.get_submodule(site.name), EMoEFFN):
            raise InputError(f"layer {index} ({site.name}) is already an EMoE layer")
        check_divisible(ffn_keys(model.get_submodule(site.up)).shape[0], config.experts)
    for index in chosen:
        site = sites[index]
        start = time.perf_counter()
        _convert_site(model, site, config)
        seconds = time.perf_counter() - start
        log.info("EMoE layer %d (%s): %d experts, top-%d, clustered in %.2fs",
                 index, site.name, config.experts, config.top_k, seconds)  # fmt: skip
    return model


def _convert_site(model: nn.Module, site: FFNSite, cfg: EMoEConfig) -> EMoEFFN:
    up, down = model.get_submodule(site.up), model.get_submodule(site.down)
    keys = ffn_keys(up)  # (d_ff, d)
    labels = balanced_kmeans(
        normalize_rows(keys), cfg.experts, seed=cfg.seed, max_iter=cfg.max_iter, method=cfg.assign
    )
    perm = expert_permutation(labels, cfg.experts)
    permute_ffn_(up, down, perm, model.get_submodule(site.mul) if site.mul else None)
    gates = avg_k_gates(ffn_keys(up), cfg.experts)
    layer = wrap_ffn(model, site, gates=gates, top_k=cfg.top_k, refresh=cfg.refresh_gates)
    layer.perm = perm  # new neuron i = original neuron perm[i]
    layer.cluster_sizes = cluster_sizes(labels, cfg.experts).tolist()
    return layer


def wrap_ffn(
    model: nn.Module, site: FFNSite, *, gates: Tensor, top_k: int, refresh: bool = True
) -> EMoEFFN:
    """Replace the dense FFN module at ``site`` with an :class:`EMoEFFN` sharing its parts.

    The weights must already be in expert order; no clustering happens here.

    Returns:
        The new layer (already placed in ``model``).
    """
    dense = model.get_submodule(site.name)
    lay = site.layout
    names = [lay.up, lay.act, lay.down, lay.dropout, lay.mul]
    parts = {n: getattr(dense, n) for n in names if n is not None}
    layer = EMoEFFN(
        parts, layout=site.layout, gates=gates.to(ffn_keys(parts[site.layout.up]).device),
        top_k=top_k, refresh=refresh, original=dense,
    )  # fmt: skip
    layer.train(dense.training)
    _set_submodule(model, site.name, layer)
    return layer


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def emoe_to_dense(model: nn.Module) -> nn.Module:
    """Put the dense FFN modules back (weights shared, in expert order), in place.

    Returns:
        The same model object, now a plain dense model.
    """
    for site in find_ffn_sites(model):
        layer = model.get_submodule(site.name)
        if isinstance(layer, EMoEFFN):
            _set_submodule(model, site.name, layer.to_dense())
    return model


def refresh_gates(model: nn.Module, momentum: float = 0.0, *, normalize: bool = False) -> int:
    """Reset every EMoE layer's gates to the mean of its current keys.

    The reference calls this (``update_one_score_gate``) after each training step; layers
    with ``refresh=True`` already do it themselves in every training forward pass.

    Returns:
        The number of layers refreshed.
    """
    layers = emoe_layers(model)
    for layer in layers.values():
        layer.refresh_gates(momentum, normalize=normalize)
    return len(layers)
