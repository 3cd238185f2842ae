"""Describe a transformer's structure: maskable Linears, FFN and attention layers, ties, heads.

:func:`describe` is the one entry point. It looks up the model family in
:data:`ARCHITECTURES` by ``config.model_type`` and applies the family's layer
patterns to the module tree; an unknown family is inferred from Linear names and
shapes, with a logged warning. Names are qualified module names of the model
passed in, so a wrapped backbone (``backbone.transformer.h.0.mlp.c_fc``) works.

Weight layout: ``nn.Linear`` stores ``(out_features, in_features)``; GPT-2's
``Conv1D`` stores the transpose ``(in_features, out_features)``.
:attr:`ArchInfo.conv1d` names those layers; :meth:`ArchInfo.is_transposed` asks.

Example:
    >>> from modularevo.models import load_model
    >>> info = describe(load_model("tiny-gptneo", "causal_lm")[0])
    >>> info.family, info.ffn[0].up
    ('gpt_neo', 'transformer.h.0.mlp.c_fc')
"""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from modularevo.models._families import ARCHITECTURES, FamilySpec
from modularevo.models._infer import infer_layers
from modularevo.models._types import (
    ArchInfo,
    AttnInfo,
    FFNInfo,
    attention_shape,
    is_conv1d,
    is_linear,
    out_features,
)

__all__ = [
    "ARCHITECTURES",
    "HEAD_NAMES",
    "ArchInfo",
    "AttnInfo",
    "FFNInfo",
    "FamilySpec",
    "describe",
    "family_of",
    "is_linear",
]

log = logging.getLogger(__name__)

#: Last name components that mark an output head; heads are never masked or merged.
HEAD_NAMES: frozenset[str] = frozenset(
    {"lm_head", "cls", "classifier", "score", "pooler", "qa_outputs"}
)


def family_of(model: nn.Module) -> str | None:
    """The :data:`ARCHITECTURES` key for ``model``'s ``config.model_type``, or None."""
    model_type = getattr(getattr(model, "config", None), "model_type", "") or ""
    for name, spec in ARCHITECTURES.items():
        if model_type in spec.model_types:
            return name
    return None


def describe(model: nn.Module) -> ArchInfo:
    """Describe ``model``'s maskable layers, FFN/attention blocks, tied weights and heads.

    Args:
        model: any torch module; HF models are matched by ``config.model_type``.

    Returns:
        The :class:`ArchInfo`; an unknown family is inferred from the module tree.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "") or ""
    modules = dict(model.named_modules())
    heads = _find_heads(modules)
    family = family_of(model)
    if family == "encoder_decoder":
        ffn, attn = _describe_encoder_decoder(model, modules)
    elif family is not None:
        ffn, attn = _apply_spec(ARCHITECTURES.get(family), modules, config)
    else:
        log.warning(
            "model type %r is not a registered architecture (%s); inferring FFN and attention "
            "layers from Linear names and shapes. Check describe(model) before masking.",
            model_type or type(model).__name__,
            ", ".join(ARCHITECTURES.names()),
        )
        ffn, attn = infer_layers(modules, config)
        family = "inferred"
    maskable = tuple(n for n, m in modules.items() if n and is_linear(m) and not _under(n, heads))
    return ArchInfo(
        family=family,
        maskable=maskable,
        ffn=tuple(ffn),
        attention=tuple(attn),
        tied=_find_tied(model),
        heads=heads,
        embeddings=tuple(n for n, m in modules.items() if isinstance(m, nn.Embedding)),
        conv1d=tuple(n for n in maskable if is_conv1d(modules[n])),
        model_type=model_type,
        layers=tuple(dict.fromkeys(f.layer for f in ffn)),
    )


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _find_heads(modules: dict[str, nn.Module]) -> tuple[str, ...]:
    heads: list[str] = []
    for name in modules:
        if name and name.rsplit(".", 1)[-1] in HEAD_NAMES and not _under(name, tuple(heads)):
            heads.append(name)
    return tuple(heads)


def _find_tied(model: nn.Module) -> tuple[tuple[str, str], ...]:
    first: dict[Any, str] = {}
    pairs: list[tuple[str, str]] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        ptr = p.data_ptr() if p.device.type != "meta" else 0
        key = ("ptr", ptr, tuple(p.shape)) if ptr else ("id", id(p))
        if key in first:
            pairs.append((name, first[key]))
        else:
            first[key] = name
    return tuple(pairs)


def _apply_spec(
    spec: FamilySpec, modules: dict[str, nn.Module], config: Any
) -> tuple[list[FFNInfo], list[AttnInfo]]:
    layer_re = re.compile(spec.layer_pattern)
    num_heads, head_dim, kv_heads = attention_shape(config)
    ffn: list[FFNInfo] = []
    attn: list[AttnInfo] = []
    for layer in (n for n in modules if layer_re.search(n)):
        for alt in spec.ffn:
            names = {role: f"{layer}.{rel}" for role, rel in alt.items()}
            if all(n in modules for n in names.values()):
                up = modules[names["up"]]
                ffn.append(
                    FFNInfo(layer, names["up"], names["down"], out_features(up), names.get("gate"))
                )
                break
        for kind, alt in spec.attention:
            names = {role: f"{layer}.{rel}" for role, rel in alt.items()}
            if all(n in modules for n in names.values()):
                fused = names["q"] == names["k"]
                attn.append(
                    AttnInfo(layer, names["q"], names["k"], names["v"], names["o"],
                             num_heads, head_dim, kind, fused, kv_heads)
                )  # fmt: skip
    return ffn, attn


def _describe_encoder_decoder(
    model: nn.Module, modules: dict[str, nn.Module]
) -> tuple[list[FFNInfo], list[AttnInfo]]:
    ffn: list[FFNInfo] = []
    attn: list[AttnInfo] = []
    for part in ("encoder", "decoder"):
        sub = getattr(model, part)
        sub_family = family_of(sub)
        sub_modules = {f"{part}.{n}" if n else part: m for n, m in sub.named_modules()}
        if sub_family is None or sub_family == "encoder_decoder":
            f, a = infer_layers(sub_modules, getattr(sub, "config", None))
        else:
            f, a = _apply_spec(ARCHITECTURES.get(sub_family), sub_modules, sub.config)
        ffn += f
        attn += a
    return ffn, attn
