"""Model layer: architecture descriptions, loading by name/path/kind, embedded defaults.

Example:
    >>> from modularevo.models import describe, load_model
    >>> model, tok = load_model("tiny-gptneo", "causal_lm")
    >>> describe(model).family
    'gpt_neo'
"""

from modularevo.models.arch import ARCHITECTURES, ArchInfo, AttnInfo, FFNInfo, describe
from modularevo.models.defaults import MODELS, ModelSpec
from modularevo.models.heads import SequenceClassifier
from modularevo.models.load import KINDS, load_model, resolve_model

__all__ = [
    "ARCHITECTURES",
    "KINDS",
    "MODELS",
    "ArchInfo",
    "AttnInfo",
    "FFNInfo",
    "ModelSpec",
    "SequenceClassifier",
    "describe",
    "load_model",
    "resolve_model",
]
