"""Value types of :mod:`modularevo.models.arch` and small helpers shared with the inference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class FFNInfo:
    """One feed-forward block.

    Attributes:
        layer: the transformer block's module name.
        up: the key / fc-in Linear (hidden -> act_dim).
        down: the value / fc-out Linear (act_dim -> hidden).
        act_dim: number of intermediate neurons.
        gate: the gate Linear of a gated FFN (Llama ``gate_proj``, T5 ``wi_0``), else None.
    """

    layer: str
    up: str
    down: str
    act_dim: int
    gate: str | None = None


@dataclass(frozen=True)
class AttnInfo:
    """One attention block.

    Attributes:
        layer: the transformer block's module name.
        q: query Linear; k, v: key and value Linears; o: output projection.
        num_heads: query heads; head_dim: size of one head.
        kind: ``"self"`` or ``"cross"`` (decoder attention over encoder states).
        fused: True when q, k and v are one Linear (GPT-2 ``c_attn``): q == k == v.
        num_kv_heads: key/value heads (fewer than num_heads under grouped-query attention).
    """

    layer: str
    q: str
    k: str
    v: str
    o: str
    num_heads: int
    head_dim: int
    kind: str = "self"
    fused: bool = False
    num_kv_heads: int = 0


@dataclass(frozen=True)
class ArchInfo:
    """What the rest of the library needs to know about a model's structure.

    Attributes:
        family: registry key of the family (``"gpt_neo"``, ``"bert"``...) or ``"inferred"``.
        maskable: every Linear (or Conv1D) outside the heads, in module order.
        ffn: one entry per FFN block, in module order.
        attention: one entry per attention block (self and cross), in module order.
        tied: (alias, canonical) parameter names that share storage, e.g.
            ``("lm_head.weight", "transformer.wte.weight")``.
        heads: head module names (never masked or merged).
        embeddings: embedding module names.
        conv1d: maskable layers stored transposed, as ``(in_features, out_features)``.
        model_type: the HF ``config.model_type`` ("" if none).
    """

    family: str
    maskable: tuple[str, ...]
    ffn: tuple[FFNInfo, ...]
    attention: tuple[AttnInfo, ...]
    tied: tuple[tuple[str, str], ...]
    heads: tuple[str, ...]
    embeddings: tuple[str, ...]
    conv1d: tuple[str, ...] = ()
    model_type: str = ""
    layers: tuple[str, ...] = field(default=())

    def is_transposed(self, name: str) -> bool:
        """Whether the layer ``name`` stores its weight as ``(in, out)`` (GPT-2 Conv1D)."""
        return name in self.conv1d

    def is_head(self, param_or_module: str) -> bool:
        """Whether a parameter or module name lies inside one of :attr:`heads`."""
        return any(param_or_module == h or param_or_module.startswith(h + ".") for h in self.heads)


def is_linear(module: nn.Module) -> bool:
    """True for ``nn.Linear`` and for HF's ``Conv1D`` (a Linear with a transposed weight)."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def attention_shape(config: Any) -> tuple[int, int, int]:
    """(num_heads, head_dim, num_kv_heads) read from an HF config; zeros when unknown."""
    heads = _first_attr(config, "num_attention_heads", "n_head", "num_heads") or 0
    hidden = _first_attr(config, "hidden_size", "n_embd", "d_model") or 0
    head_dim = _first_attr(config, "head_dim", "d_kv") or (hidden // heads if heads else 0)
    kv = _first_attr(config, "num_key_value_heads") or heads
    return int(heads), int(head_dim), int(kv)


def _first_attr(config: Any, *names: str) -> Any:
    for n in names:
        value = getattr(config, n, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def out_features(module: nn.Module) -> int:
    if is_conv1d(module):
        return int(module.nf)  # type: ignore[arg-type]
    return int(module.out_features)  # type: ignore[arg-type]
