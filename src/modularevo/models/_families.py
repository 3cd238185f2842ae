"""The registered architecture families: where FFN and attention Linears sit in a block.

A family is matched by ``config.model_type``. ``layer_pattern`` is a regex that
finds transformer block module names anywhere in the tree (so a wrapped backbone
matches too); ``ffn`` and ``attention`` list names relative to one block, tried in
order, and the first alternative whose modules all exist is used. Adding a family
is one ``ARCHITECTURES.add`` call.
"""

from __future__ import annotations

from dataclasses import dataclass

from modularevo.registry import Registry


@dataclass(frozen=True)
class FamilySpec:
    """Where one family keeps its layers.

    Attributes:
        model_types: HF ``config.model_type`` values of this family.
        layer_pattern: regex matching a transformer block's module name.
        ffn: alternatives of {"up", "down"[, "gate"]} -> name relative to the block.
        attention: (kind, {"q", "k", "v", "o"} -> relative name) pairs; every
            pair whose modules exist is reported (self and cross attention).
        description: one line for docs and ``modularevo ls``.
    """

    model_types: tuple[str, ...]
    layer_pattern: str
    ffn: tuple[dict[str, str], ...]
    attention: tuple[tuple[str, dict[str, str]], ...]
    description: str = ""


ARCHITECTURES: Registry[FamilySpec] = Registry("architecture")

ARCHITECTURES.add(
    "gpt_neo",
    FamilySpec(
        model_types=("gpt_neo",),
        layer_pattern=r"(?:^|\.)h\.\d+$",
        ffn=({"up": "mlp.c_fc", "down": "mlp.c_proj"},),
        attention=(
            (
                "self",
                {
                    "q": "attn.attention.q_proj",
                    "k": "attn.attention.k_proj",
                    "v": "attn.attention.v_proj",
                    "o": "attn.attention.out_proj",
                },
            ),
        ),
        description="GPT-Neo decoder: nn.Linear everywhere; lm_head tied to wte.",
    ),
)

_C_PROJ = "attn.c_proj"
ARCHITECTURES.add(
    "gpt2",
    FamilySpec(
        model_types=("gpt2",),
        layer_pattern=r"(?:^|\.)h\.\d+$",
        ffn=({"up": "mlp.c_fc", "down": "mlp.c_proj"},),
        attention=(
            ("self", {"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "o": _C_PROJ}),
            (
                "cross",
                {
                    "q": "crossattention.q_attn",
                    "k": "crossattention.c_attn",
                    "v": "crossattention.c_attn",
                    "o": "crossattention.c_proj",
                },
            ),
        ),
        description=(
            "GPT-2 decoder: Conv1D layers store weights transposed (in, out); "
            "q/k/v fused in attn.c_attn; lm_head tied to wte."
        ),
    ),
)

_LLAMA_TYPES = (
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
    "olmo",
    "olmo2",
    "smollm3",
)
ARCHITECTURES.add(
    "llama",
    FamilySpec(
        model_types=_LLAMA_TYPES,
        layer_pattern=r"(?:^|\.)layers\.\d+$",
        ffn=({"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"},),
        attention=(
            (
                "self",
                {
                    "q": "self_attn.q_proj",
                    "k": "self_attn.k_proj",
                    "v": "self_attn.v_proj",
                    "o": "self_attn.o_proj",
                },
            ),
        ),
        description="Llama-like decoders incl. Gemma/Mistral/Qwen: gated FFN (gate/up/down), GQA.",
    ),
)

_BERT_ATTN = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
}
ARCHITECTURES.add(
    "bert",
    FamilySpec(
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        layer_pattern=r"(?:^|\.)layer\.\d+$",
        ffn=({"up": "intermediate.dense", "down": "output.dense"},),
        attention=(
            ("self", _BERT_ATTN),
            ("cross", {role: "cross" + rel for role, rel in _BERT_ATTN.items()}),
        ),
        description="BERT/RoBERTa encoders incl. MiniLM; as decoder with cross-attention.",
    ),
)

_T5_QKVO = {"q": "q", "k": "k", "v": "v", "o": "o"}
ARCHITECTURES.add(
    "t5",
    FamilySpec(
        model_types=("t5", "mt5", "umt5"),
        layer_pattern=r"(?:^|\.)block\.\d+$",
        ffn=tuple(
            alt
            for i in (1, 2)  # encoder blocks: layer.1 is the FFN; decoder blocks: layer.2
            for alt in (
                {
                    "gate": f"layer.{i}.DenseReluDense.wi_0",
                    "up": f"layer.{i}.DenseReluDense.wi_1",
                    "down": f"layer.{i}.DenseReluDense.wo",
                },
                {"up": f"layer.{i}.DenseReluDense.wi", "down": f"layer.{i}.DenseReluDense.wo"},
            )
        ),
        attention=(
            ("self", {r: f"layer.0.SelfAttention.{n}" for r, n in _T5_QKVO.items()}),
            ("cross", {r: f"layer.1.EncDecAttention.{n}" for r, n in _T5_QKVO.items()}),
        ),
        description="T5 encoder-decoder: self attention, decoder cross attention, (gated) FFN.",
    ),
)

ARCHITECTURES.add(
    "encoder_decoder",
    FamilySpec(
        model_types=("encoder-decoder",),
        layer_pattern=r"$^",  # described through its encoder's and decoder's own families
        ffn=(),
        attention=(),
        description="EncoderDecoderModel (e.g. BERT2BERT): encoder and decoder described apart.",
    ),
)
