"""Transformers classes for models with per-layer FFN widths and head counts.

This file is self-contained on purpose: it imports only ``torch`` and
``transformers``. :func:`modularevo.deploy.extract.save_extracted` copies it into
every extracted folder as ``modeling_modularevo_pruned.py`` and points the
config's ``auto_map`` at it. With modularevo installed, ``import modularevo``
registers these classes with the Auto classes before the first ``from_pretrained``
(no ``trust_remote_code``; the copied file is never executed). Without modularevo,
``AutoModel*.from_pretrained(folder, trust_remote_code=True)`` executes the copied
file: only do that for a folder whose copy you have checked (see docs/deploy.md).

The pruned shape is stored in two config fields:

- ``ffn_sizes``: intermediate width of each layer's FFN;
- ``head_counts``: number of attention heads of each layer (head size unchanged);
  under grouped-query attention the query heads, kept in whole groups, so a layer has
  ``head_counts[i] // (num_attention_heads // num_key_value_heads)`` key/value heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3ForSequenceClassification,
    Gemma3TextConfig,
    Gemma3TextModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoForSequenceClassification,
    GPTNeoModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2Model,
)


@dataclass(frozen=True)
class LayerSpec:
    """Dotted paths (relative to a transformer block) of the parts that get resized.

    Attributes:
        q, k, v, o: attention projections (Linear).
        up: FFN input projections (Linear; several for gated FFNs).
        down: FFN output projection (Linear).
        attn: module holding the head-count attributes.
        head_attrs: attribute names on ``attn`` set to the new head count.
        width_attrs: attribute names on ``attn`` set to heads * head_dim.
    """

    q: str
    k: str
    v: str
    o: str
    up: tuple[str, ...]
    down: str
    attn: str
    head_attrs: tuple[str, ...]
    width_attrs: tuple[str, ...]


FAMILY_SPECS: dict[str, tuple[str, LayerSpec]] = {
    # family -> (suffix of the block list's dotted path, spec)
    "bert": (
        "encoder.layer",
        LayerSpec(
            q="attention.self.query",
            k="attention.self.key",
            v="attention.self.value",
            o="attention.output.dense",
            up=("intermediate.dense",),
            down="output.dense",
            attn="attention.self",
            head_attrs=("num_attention_heads",),
            width_attrs=("all_head_size",),
        ),
    ),
    "gpt_neo": (
        "h",
        LayerSpec(
            q="attn.attention.q_proj",
            k="attn.attention.k_proj",
            v="attn.attention.v_proj",
            o="attn.attention.out_proj",
            up=("mlp.c_fc",),
            down="mlp.c_proj",
            attn="attn.attention",
            head_attrs=("num_heads",),
            width_attrs=("embed_dim",),
        ),
    ),
    "llama": (
        "layers",
        LayerSpec(
            q="self_attn.q_proj",
            k="self_attn.k_proj",
            v="self_attn.v_proj",
            o="self_attn.o_proj",
            up=("mlp.gate_proj", "mlp.up_proj"),
            down="mlp.down_proj",
            attn="self_attn",
            head_attrs=(),
            width_attrs=(),
        ),
    ),
}

# Qwen2 and Gemma 3 lay out their blocks like Llama (GQA, gated FFN; Qwen2 adds q/k/v
# biases, Gemma 3 q/k norms over the head size): the same spec, their own classes
FAMILY_SPECS["qwen2"] = FAMILY_SPECS["llama"]
FAMILY_SPECS["gemma3_text"] = FAMILY_SPECS["llama"]

MODEL_TYPE_FAMILY = {
    "bert": "bert", "gpt_neo": "gpt_neo", "llama": "llama", "qwen2": "qwen2",
    "gemma3_text": "gemma3_text",
}  # fmt: skip


def find_blocks(model: nn.Module, family: str) -> tuple[str, nn.ModuleList]:
    """The dotted name and the ModuleList of the transformer blocks of ``model``."""
    suffix = FAMILY_SPECS[family][0]
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (name == suffix or name.endswith("." + suffix)):
            return name, mod
    raise ValueError(f"no block list ending in {suffix!r} found in {type(model).__name__}")


def sub(block: nn.Module, path: str) -> Any:
    """``block.get_submodule(path)``, typed loosely for attribute access."""
    return block.get_submodule(path)


def _new_linear(old: nn.Linear, out_f: int, in_f: int) -> nn.Linear:
    lin = nn.Linear(in_f, out_f, bias=old.bias is not None)
    return lin.to(device=old.weight.device, dtype=old.weight.dtype)


def resize_block(
    block: nn.Module, spec: LayerSpec, ffn: int, heads: int, head_dim: int, group: int = 1
) -> None:
    """Replace a block's Linear layers by empty ones of the pruned shapes, in place.

    ``group``: query heads per key/value head (k and v get ``heads // group`` heads).
    """
    for path in (spec.q, spec.k, spec.v):
        old = sub(block, path)
        n = heads if path == spec.q else heads // group
        block.set_submodule(path, _new_linear(old, n * head_dim, old.in_features))
    old = sub(block, spec.o)
    block.set_submodule(spec.o, _new_linear(old, old.out_features, heads * head_dim))
    for path in spec.up:
        old = sub(block, path)
        block.set_submodule(path, _new_linear(old, ffn, old.in_features))
    old = sub(block, spec.down)
    block.set_submodule(spec.down, _new_linear(old, old.out_features, ffn))
    attn = sub(block, spec.attn)
    for a in spec.head_attrs:
        setattr(attn, a, heads)
    for a in spec.width_attrs:
        setattr(attn, a, heads * head_dim)


def head_dim_of(config: Any) -> int:
    """Size of one attention head for ``config``."""
    hd = getattr(config, "head_dim", None)
    if hd:
        return int(hd)
    heads = getattr(config, "num_attention_heads", None) or config.num_heads
    return int(config.hidden_size) // int(heads)


def shrink_to_config(model: nn.Module, family: str) -> None:
    """Resize every block of a freshly built ``model`` to its config's pruned shape."""
    cfg: Any = model.config
    _, blocks = find_blocks(model, family)
    spec = FAMILY_SPECS[family][1]
    hd = head_dim_of(cfg)
    kv = getattr(cfg, "num_key_value_heads", None)
    group = int(cfg.num_attention_heads) // int(kv) if kv else 1
    for i, block in enumerate(blocks):
        resize_block(block, spec, int(cfg.ffn_sizes[i]), int(cfg.head_counts[i]), hd, group)


def _check_fields(config: Any) -> None:
    n = config.num_hidden_layers if hasattr(config, "num_hidden_layers") else config.num_layers
    for field in ("ffn_sizes", "head_counts"):
        value = getattr(config, field, None)
        if value is None or len(value) != n:
            raise ValueError(f"pruned config needs {field!r} with {n} entries, got {value!r}")


class PrunedBertConfig(BertConfig):
    """BERT config with per-layer ``ffn_sizes`` and ``head_counts``."""

    model_type = "modularevo_pruned_bert"


class PrunedGPTNeoConfig(GPTNeoConfig):
    """GPT-Neo config with per-layer ``ffn_sizes`` and ``head_counts``."""

    model_type = "modularevo_pruned_gpt_neo"


class PrunedLlamaConfig(LlamaConfig):
    """Llama config with per-layer ``ffn_sizes`` and ``head_counts``."""

    model_type = "modularevo_pruned_llama"


class PrunedQwen2Config(Qwen2Config):
    """Qwen2 config with per-layer ``ffn_sizes`` and ``head_counts``."""

    model_type = "modularevo_pruned_qwen2"


class PrunedGemma3TextConfig(Gemma3TextConfig):
    """Gemma 3 (text) config with per-layer ``ffn_sizes`` and ``head_counts``."""

    model_type = "modularevo_pruned_gemma3_text"


def _make(base: type, config_cls: type, family: str) -> type:
    def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        _check_fields(config)
        base.__init__(self, config, *args, **kwargs)
        shrink_to_config(self, family)

    name = "Pruned" + base.__name__
    return type(name, (base,), {"__init__": __init__, "config_class": config_cls})


PrunedBertModel = _make(BertModel, PrunedBertConfig, "bert")
PrunedBertForSequenceClassification = _make(BertForSequenceClassification, PrunedBertConfig, "bert")
PrunedBertForMaskedLM = _make(BertForMaskedLM, PrunedBertConfig, "bert")
PrunedBertForTokenClassification = _make(BertForTokenClassification, PrunedBertConfig, "bert")
PrunedGPTNeoModel = _make(GPTNeoModel, PrunedGPTNeoConfig, "gpt_neo")
PrunedGPTNeoForCausalLM = _make(GPTNeoForCausalLM, PrunedGPTNeoConfig, "gpt_neo")
PrunedGPTNeoForSequenceClassification = _make(
    GPTNeoForSequenceClassification, PrunedGPTNeoConfig, "gpt_neo"
)
PrunedLlamaModel = _make(LlamaModel, PrunedLlamaConfig, "llama")
PrunedLlamaForCausalLM = _make(LlamaForCausalLM, PrunedLlamaConfig, "llama")
PrunedLlamaForSequenceClassification = _make(
    LlamaForSequenceClassification, PrunedLlamaConfig, "llama"
)
PrunedQwen2Model = _make(Qwen2Model, PrunedQwen2Config, "qwen2")
PrunedQwen2ForCausalLM = _make(Qwen2ForCausalLM, PrunedQwen2Config, "qwen2")
PrunedQwen2ForSequenceClassification = _make(
    Qwen2ForSequenceClassification, PrunedQwen2Config, "qwen2"
)
PrunedGemma3TextModel = _make(Gemma3TextModel, PrunedGemma3TextConfig, "gemma3_text")
PrunedGemma3ForCausalLM = _make(Gemma3ForCausalLM, PrunedGemma3TextConfig, "gemma3_text")
PrunedGemma3ForSequenceClassification = _make(
    Gemma3ForSequenceClassification, PrunedGemma3TextConfig, "gemma3_text"
)

# family -> (config class, {original class name: pruned class})
PRUNED_CLASSES: dict[str, tuple[type, dict[str, type]]] = {
    "bert": (
        PrunedBertConfig,
        {
            "BertModel": PrunedBertModel,
            "BertForSequenceClassification": PrunedBertForSequenceClassification,
            "BertForMaskedLM": PrunedBertForMaskedLM,
            "BertForTokenClassification": PrunedBertForTokenClassification,
        },
    ),
    "gpt_neo": (
        PrunedGPTNeoConfig,
        {
            "GPTNeoModel": PrunedGPTNeoModel,
            "GPTNeoForCausalLM": PrunedGPTNeoForCausalLM,
            "GPTNeoForSequenceClassification": PrunedGPTNeoForSequenceClassification,
        },
    ),
    "llama": (
        PrunedLlamaConfig,
        {
            "LlamaModel": PrunedLlamaModel,
            "LlamaForCausalLM": PrunedLlamaForCausalLM,
            "LlamaForSequenceClassification": PrunedLlamaForSequenceClassification,
        },
    ),
    "qwen2": (
        PrunedQwen2Config,
        {
            "Qwen2Model": PrunedQwen2Model,
            "Qwen2ForCausalLM": PrunedQwen2ForCausalLM,
            "Qwen2ForSequenceClassification": PrunedQwen2ForSequenceClassification,
        },
    ),
    "gemma3_text": (
        PrunedGemma3TextConfig,
        {
            "Gemma3TextModel": PrunedGemma3TextModel,
            "Gemma3ForCausalLM": PrunedGemma3ForCausalLM,
            "Gemma3ForSequenceClassification": PrunedGemma3ForSequenceClassification,
        },
    ),
}

AUTO_CLASS_OF_SUFFIX = {
    "Model": "AutoModel",
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForMaskedLM": "AutoModelForMaskedLM",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForCausalLM": "AutoModelForCausalLM",
}


def auto_class_name(cls_name: str) -> str:
    """The ``transformers`` Auto class that should map to model class ``cls_name``."""
    for suffix, auto in AUTO_CLASS_OF_SUFFIX.items():
        if cls_name.endswith(suffix) and not (suffix == "Model" and "For" in cls_name):
            return auto
    raise ValueError(f"no Auto class known for {cls_name}")


def register_auto_classes() -> None:
    """Register the pruned configs and models with ``transformers``' Auto classes."""
    import transformers

    for cfg_cls, models in PRUNED_CLASSES.values():
        try:
            transformers.AutoConfig.register(cfg_cls.model_type, cfg_cls)
        except ValueError:
            continue  # already registered
        for orig, cls in models.items():
            getattr(transformers, auto_class_name(orig)).register(cfg_cls, cls)
