"""Model layer: architecture descriptions, loading by name/path/kind, embedded defaults.

The names below are imported on first use, so reading the registry of embedded models
(``modularevo.models.defaults``, e.g. for ``modularevo models ls``) loads neither torch
nor transformers.

Example:
    >>> from modularevo.models import describe, load_model
    >>> model, tok = load_model("tiny-gptneo", "causal_lm")
    >>> describe(model).family
    'gpt_neo'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modularevo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from modularevo.models.arch import ARCHITECTURES, ArchInfo, AttnInfo, FFNInfo, describe
    from modularevo.models.defaults import MODELS, ModelSpec
    from modularevo.models.heads import SequenceClassifier
    from modularevo.models.load import KINDS, load_model, resolve_model

_EXPORTS = {
    "ARCHITECTURES": "arch", "ArchInfo": "arch", "AttnInfo": "arch", "FFNInfo": "arch",
    "describe": "arch", "MODELS": "defaults", "ModelSpec": "defaults",
    "SequenceClassifier": "heads", "KINDS": "load", "load_model": "load",
    "resolve_model": "load",
}  # fmt: skip
__getattr__ = lazy_exports(__name__, _EXPORTS)

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
