"""The EMoE layer: a dense FFN whose neurons are grouped into experts, top-k per token.

:class:`EMoEFFN` replaces a dense FFN module in place. It keeps the original
sub-modules under their original attribute names (``dense`` for BERT's
intermediate, ``c_fc``/``c_proj`` for GPT-2 and GPT-Neo, ``gate_proj``/``up_proj``/
``down_proj`` for the gated FFNs of Llama, Qwen and Gemma), so the model's state-dict
keys do not change and ``save_pretrained`` still writes a plain dense checkpoint.
The gate vectors are a non-persistent fp32 buffer, saved apart by
:func:`modularevo.emoe.convert.save_emoe`.

Routing follows EMoE with unit weights (``--one_score`` in the reference, the
LLaMA path; arXiv 2310.10908): router logits are ``x @ gates.T``, the top-k experts
get weight 1 and the others 0, so the output is exactly the dense FFN with the
non-selected neuron groups zeroed; the output bias is added once. There is no gate
noise, no capacity limit (no token dropping) and no auxiliary loss.

Example:
    >>> up, down = nn.Linear(8, 16), nn.Linear(16, 8)
    >>> ffn = EMoEFFN.plain(up, nn.GELU(), down, n_experts=4, top_k=2)
    >>> ffn(torch.randn(3, 8)).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from modularevo.emoe.split import avg_k_gates, check_divisible, expert_mask, topk_experts
from modularevo.errors import InputError


@dataclass(frozen=True)
class FFNLayout:
    """Attribute names of a dense FFN module's parts.

    Attributes:
        up: the key layer W0 (nn.Linear or GPT-2 Conv1D), d -> d_ff.
        act: the activation module.
        down: the value layer W1, d_ff -> d; None when it lives outside the module
            (BERT's ``intermediate`` holds only ``dense`` + activation; ``output.dense``
            follows it), then the module returns the masked activations.
        dropout: dropout applied after ``down``, if any.
        mul: the linear branch of a gated FFN (Llama's ``up_proj``), multiplied with
            act(up x); ``up`` is then the gate (``gate_proj``), whose rows are the keys.
            An expert is a block of neurons across gate, up and down together.
    """

    up: str
    act: str
    down: str | None = None
    dropout: str | None = None
    mul: str | None = None


BERT_INTERMEDIATE = FFNLayout("dense", "intermediate_act_fn")
GPT_MLP = FFNLayout("c_fc", "act", "c_proj", "dropout")
PLAIN = FFNLayout("up", "act", "down")
GATED_MLP = FFNLayout("gate_proj", "act_fn", "down_proj", mul="up_proj")  # Llama/Qwen/Gemma
LAYOUTS: tuple[FFNLayout, ...] = (BERT_INTERMEDIATE, GPT_MLP, GATED_MLP, PLAIN)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a GPT-2 style Conv1D (weight stored as (in, out))."""
    return type(module).__name__ == "Conv1D"


def ffn_keys(up: nn.Module) -> Tensor:
    """The key matrix W0 as (d_ff, d), for nn.Linear and GPT-2 Conv1D alike.

    Raises:
        InputError: if ``up`` has no 2-D weight.
    """
    weight = getattr(up, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise InputError(
            f"the FFN key layer must be nn.Linear or Conv1D with a 2-D weight, "
            f"got {type(up).__name__}; EMoE supports BERT, GPT-2, GPT-Neo and gated "
            "(Llama-family) FFNs"
        )
    return weight.t() if is_conv1d(up) else weight


class EMoEFFN(nn.Module):
    """A dense FFN run as an emergent mixture of experts (arXiv 2310.10908).

    Expert e is the contiguous neuron block [e*s, (e+1)*s) of the key layer, so the
    weights must already be permuted into expert order (see
    :func:`modularevo.emoe.convert.emoe_convert`).

    Args:
        parts: the FFN's sub-modules by attribute name (they are shared, not copied).
        layout: which part is which.
        gates: (E, d) gate vectors; E must divide d_ff.
        top_k: experts kept per token, 1 <= k <= E.
        refresh: in training mode, reset the gates to the mean of the current keys before
            every forward pass (the reference's ``update_one_score_gate`` with momentum 0,
            which it calls after each step; keys only change at optimizer steps, so this is
            the same function). False keeps the gates fixed.
        original: the dense module replaced, kept (unregistered) for :meth:`to_dense`.

    Raises:
        InputError: on a missing part, a gate shape that does not fit, or a bad ``top_k``.
    """

    def __init__(
        self,
        parts: dict[str, nn.Module],
        *,
        layout: FFNLayout,
        gates: Tensor,
        top_k: int,
        refresh: bool = True,
        original: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for name in (layout.up, layout.act, layout.down, layout.dropout, layout.mul):
            if name is not None and name not in parts:
                raise InputError(f"FFN part {name!r} missing; got parts {sorted(parts)}")
        for name, module in parts.items():
            self.add_module(name, module)
        self.layout = layout
        keys = ffn_keys(parts[layout.up])
        n_experts = gates.shape[0]
        self.expert_size = check_divisible(keys.shape[0], n_experts)
        if gates.dim() != 2 or gates.shape[1] != keys.shape[1]:
            raise InputError(
                f"gates must be (E, {keys.shape[1]}) for keys {tuple(keys.shape)}, "
                f"got {tuple(gates.shape)}; compute them with avg_k_gates(keys, E)"
            )
        topk_experts(torch.zeros(n_experts), top_k)  # validates 1 <= top_k <= E
        self.n_experts = n_experts
        self.top_k = top_k
        self.refresh = refresh
        self.register_buffer("gates", gates.detach().float().clone(), persistent=False)
        self.perm: Tensor | None = None  # new neuron i = original neuron perm[i], if known
        self.cluster_sizes: list[int] | None = None  # sizes the clustering produced, if known
        object.__setattr__(self, "_original", original)

    @classmethod
    def plain(
        cls, up: nn.Module, act: nn.Module, down: nn.Module, *, n_experts: int, top_k: int
    ) -> EMoEFFN:
        """An EMoE FFN from bare layers, gates from the keys as they are (no clustering)."""
        gates = avg_k_gates(ffn_keys(up), n_experts)
        return cls({"up": up, "act": act, "down": down}, layout=PLAIN, gates=gates, top_k=top_k)

    def part(self, role: str) -> nn.Module:
        """The sub-module playing ``role`` ("up", "act", "down", "dropout", "mul")."""
        name = getattr(self.layout, role)
        if name is None:
            raise InputError(f"this EMoE FFN has no {role!r} part (layout {self.layout})")
        return getattr(self, name)

    def hidden(self, x: Tensor) -> Tensor:
        """Dense activations act(W0 x + b0) (times the linear branch of a gated FFN):
        (..., d_ff), no expert mask."""
        h = self.part("act")(self.part("up")(x))
        return h * self.part("mul")(x) if self.layout.mul else h

    def router_logits(self, x: Tensor) -> Tensor:
        """Avg-k router logits (..., E) in fp32: the mean pre-activation of each expert."""
        gates: Tensor = self.gates  # type: ignore[assignment]
        return x.float() @ gates.t()

    def expert_mask(self, x: Tensor) -> Tensor:
        """0/1 neuron mask (..., d_ff) of the top-k experts of each token."""
        return expert_mask(self.router_logits(x), self.top_k, self.expert_size)

    def forward(self, x: Tensor) -> Tensor:
        """Dense FFN with the neurons of non-selected experts zeroed (unit weights)."""
        if self.training and self.refresh:
            self.refresh_gates()
        h = self.hidden(x) * self.expert_mask(x).to(x.dtype)  # (..., d_ff)
        if self.layout.down is None:
            return h
        out = self.part("down")(h)
        return self.part("dropout")(out) if self.layout.dropout else out

    @torch.no_grad()
    def refresh_gates(self, momentum: float = 0.0, *, normalize: bool = False) -> None:
        """Reset the gates to the mean of the current key rows of each expert.

        Args:
            momentum: new = momentum * old + (1 - momentum) * mean keys (reference default 0).
            normalize: L2-normalise each gate vector afterwards (reference option).
        """
        gates: Tensor = self.gates  # type: ignore[assignment]
        new = avg_k_gates(ffn_keys(self.part("up")), self.n_experts).to(gates.device)
        gates.mul_(momentum).add_(new, alpha=1.0 - momentum)
        if normalize:
            gates.div_(gates.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def to_dense(self) -> nn.Module:
        """The dense module this one replaced, sharing the (possibly trained) weights.

        Raises:
            InputError: if this layer was not built by replacing a module.
        """
        original = self.__dict__.get("_original")
        if original is None:
            raise InputError("this EMoE FFN was built from bare layers; there is no dense module")
        return original

    def extra_repr(self) -> str:
        """Experts, k, expert size and gate mode, shown by ``print(model)``."""
        return (
            f"experts={self.n_experts}, top_k={self.top_k}, expert_size={self.expert_size}, "
            f"refresh={self.refresh}"
        )
