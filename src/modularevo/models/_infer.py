"""Infer FFN and attention layers of an unregistered family from names and shapes.

Blocks are the children of every ``nn.ModuleList`` that hold Linears. Inside a
block, attention projections are recognised by name (q/k/v/o and their common
spellings, or a fused qkv), and the FFN by shape: an ``up`` Linear
(hidden -> d) paired with a ``down`` Linear (d -> hidden), d != hidden, plus a
``gate`` of the same shape as ``up`` when present.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from modularevo.models._types import AttnInfo, FFNInfo, attention_shape, is_conv1d, is_linear

_ROLE_NAMES = {
    "q": re.compile(r"^(q|q_proj|query|wq|q_lin|q_attn)$"),
    "k": re.compile(r"^(k|k_proj|key|wk|k_lin)$"),
    "v": re.compile(r"^(v|v_proj|value|wv|v_lin)$"),
    "qkv": re.compile(r"^(c_attn|qkv|qkv_proj|query_key_value|wqkv|in_proj)$", re.IGNORECASE),
    "o": re.compile(r"^(o|o_proj|out_proj|dense|c_proj|out_lin|wo|proj)$"),
}
_ATTN_PATH = re.compile(r"attn|attention", re.IGNORECASE)


def _shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or Conv1D."""
    w: Any = module.weight
    if is_conv1d(module):
        return int(w.shape[0]), int(w.shape[1])
    return int(w.shape[1]), int(w.shape[0])


def _blocks(modules: dict[str, nn.Module]) -> list[str]:
    blocks: list[str] = []
    for name, module in modules.items():
        if isinstance(module, nn.ModuleList):
            for i, child in enumerate(module):
                if any(is_linear(m) for m in child.modules()):
                    blocks.append(f"{name}.{i}" if name else str(i))
    # keep the innermost lists only (T5-like blocks hold a ModuleList of sub-layers)
    return [b for b in blocks if not any(o != b and o.startswith(b + ".") for o in blocks)]


def infer_layers(
    modules: dict[str, nn.Module], config: Any
) -> tuple[list[FFNInfo], list[AttnInfo]]:
    """Best-effort FFN and attention description of an unknown family.

    Args:
        modules: ``dict(model.named_modules())`` (names may carry a prefix).
        config: the HF config, used for head counts (zeros when absent).

    Returns:
        (ffn, attention) lists in module order.
    """
    heads, head_dim, kv_heads = attention_shape(config)
    ffn: list[FFNInfo] = []
    attn: list[AttnInfo] = []
    for block in _blocks(modules):
        linears = {n: m for n, m in modules.items() if n.startswith(block + ".") and is_linear(m)}
        used: set[str] = set()
        for parent in dict.fromkeys(n.rsplit(".", 1)[0] for n in linears):
            found = _attention_in(parent, linears)
            if found is None:
                continue
            q, k, v, o = found
            used.update((q, k, v, o))
            kind = "cross" if re.search(r"cross|encdec|enc_dec", parent, re.IGNORECASE) else "self"
            attn.append(AttnInfo(block, q, k, v, o, heads, head_dim, kind, q == k, kv_heads))
        rest = {n: m for n, m in linears.items() if n not in used}
        ffn.extend(_ffn_in(block, rest))
    return ffn, attn


def _attention_in(parent: str, linears: dict[str, nn.Module]) -> tuple[str, ...] | None:
    if not _ATTN_PATH.search(parent) and not any(
        _ROLE_NAMES["q"].match(n.rsplit(".", 1)[-1]) for n in linears if n.startswith(parent)
    ):
        return None
    roles: dict[str, str] = {}
    outs = [parent, parent.rsplit(".", 1)[0]]  # BERT keeps o in a sibling module
    for name in linears:
        leaf = name.rsplit(".", 1)[-1]
        owner = name.rsplit(".", 1)[0]
        for role, pat in _ROLE_NAMES.items():
            if pat.match(leaf) and role not in roles:
                if role == "o" and not any(owner.startswith(p) for p in outs):
                    continue
                if role != "o" and owner != parent:
                    continue
                roles[role] = name
    if "qkv" in roles and "o" in roles:
        return roles["qkv"], roles["qkv"], roles["qkv"], roles["o"]
    if all(r in roles for r in "qkvo"):
        return roles["q"], roles["k"], roles["v"], roles["o"]
    return None


def _ffn_in(block: str, linears: dict[str, nn.Module]) -> list[FFNInfo]:
    shapes = {n: _shape(m) for n, m in linears.items()}
    for up, (d_in, d_act) in shapes.items():
        if d_act == d_in:
            continue
        downs = [n for n, s in shapes.items() if s == (d_act, d_in)]
        if not downs:
            continue
        twins = [n for n, s in shapes.items() if s == (d_in, d_act) and n != up]
        gate = next((n for n in [up, *twins] if "gate" in n.rsplit(".", 1)[-1]), None)
        if gate == up and twins:
            up, gate = twins[0], up
        elif gate is None and twins:
            gate, up = up, twins[0]  # e.g. wi_0 (gate) then wi_1 (up)
        return [FFNInfo(block, up, downs[0], d_act, gate)]
    return []
