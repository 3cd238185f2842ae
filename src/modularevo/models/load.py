"""Load any HF model by embedded short name, local folder or Hub name, as a given kind.

Kinds: ``causal_lm``, ``masked_lm``, ``encoder``, ``seq2seq``, ``classifier``.

Example:
    >>> from modularevo.models import load_model
    >>> model, tok = load_model("tiny-bert", "classifier", num_labels=3)
    >>> model(**tok(["a b", "c"], return_tensors="pt", padding=True)).logits.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from modularevo.errors import InputError, UnknownNameError
from modularevo.models.defaults import MODELS
from modularevo.models.heads import HEAD_CONFIG, SequenceClassifier

log = logging.getLogger(__name__)

KINDS = ("causal_lm", "masked_lm", "encoder", "seq2seq", "classifier")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class UnknownModelError(UnknownNameError, InputError):
    """A model name that is neither embedded, nor a local folder, nor reachable on the Hub."""


def hub_offline() -> bool:
    """Whether the Hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_model(name_or_path: str) -> str:
    """Turn an embedded short name, local folder or Hub name into a ``from_pretrained`` source.

    Args:
        name_or_path: ``"minilm"`` (see ``modularevo models ls``), a folder holding
            ``config.json``, or a Hub name such as ``"EleutherAI/gpt-neo-125m"``.

    Returns:
        A local folder path, or the Hub name when the Hub may be used.

    Raises:
        UnknownModelError: for a near miss of an embedded name (did-you-mean).
        InputError: for a missing folder, or a Hub name that is not cached while offline.
    """
    name = str(name_or_path)
    if name in MODELS:
        return str(MODELS.get(name).locate())
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", "./", "../", "~")):
        return _local_folder(path)
    if not _HUB_ID.match(name):
        raise UnknownModelError(_unknown(name))
    cached = _hub_cache_folder(name)
    if cached is not None:
        return cached
    if "/" not in name and difflib.get_close_matches(name, MODELS.names(), n=1, cutoff=0.6):
        raise UnknownModelError(_unknown(name))
    if hub_offline():
        raise InputError(
            f"model {name!r} is not an embedded model or a local folder, and the Hugging Face Hub "
            "is offline (HF_HUB_OFFLINE=1), so it cannot be downloaded: download it on a "
            "connected machine (`huggingface-cli download NAME --local-dir DIR`) and pass the "
            f"folder path instead, or use an embedded model ({', '.join(MODELS.names())})"
        )
    return name


def _unknown(name: str) -> str:
    return (
        MODELS.unknown_message(name)
        + " A local folder with config.json or a Hub name 'org/name' works too."
    )


def _local_folder(path: Path) -> str:
    if not path.is_dir():
        raise InputError(
            f"model folder {str(path)!r} does not exist; pass an existing folder written by "
            "save_pretrained (with config.json), a Hub name, or an embedded model name"
        )
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise InputError(
            f"model folder {str(path)!r} has no config.json (found: {found or 'nothing'}); "
            "point at the folder written by save_pretrained"
        )
    return str(path.resolve())


def _hub_cache_folder(name: str) -> str | None:
    if "/" not in name:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # a broken cache is the same as no cache here
        return None
    return str(Path(hit).parent) if isinstance(hit, str) else None


def allowed_kinds(config: Any) -> tuple[str, ...]:
    """The kinds a model with this HF config can be loaded as."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        return ("seq2seq", "encoder", "classifier")
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return ("masked_lm", "encoder", "classifier")
    return ("causal_lm", "classifier")


def load_model(
    name_or_path: str, kind: str, *, num_labels: int | None = None, **kw: Any
) -> tuple[nn.Module, Any]:
    """Load a model and its tokenizer as ``kind``.

    Args:
        name_or_path: embedded short name, local folder, or Hub name (see :func:`resolve_model`).
        kind: ``causal_lm``, ``masked_lm``, ``encoder``, ``seq2seq`` or ``classifier``.
        num_labels: number of classes; required for ``classifier``.
        **kw: passed to ``from_pretrained`` (e.g. ``dtype``); for ``classifier`` also
            ``pooling`` ("mean", "last", "cls") and ``dropout``.

    Returns:
        (model in eval mode, tokenizer). Weights the checkpoint lacks (an MLM head
        for MiniLM, a new classifier) are initialised fresh, logged, and listed in
        ``model.modularevo_fresh_keys``.

    Raises:
        InputError: unknown kind, a kind this model cannot be, missing ``num_labels``,
            or a name that cannot be resolved.
    """
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown model kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}.")
    if kind == "classifier" and is_extracted_classifier(name_or_path):
        return _load_extracted_classifier(name_or_path)
    saved = Path(name_or_path).is_dir() and is_saved_classifier(name_or_path)
    if kind == "classifier" and not saved and (num_labels is None or num_labels < 2):
        raise InputError(
            f"kind 'classifier' needs num_labels >= 2, got {num_labels!r}; pass num_labels="
            "the size of the task's label set"
        )
    from modularevo.models._build import build

    spec = MODELS.get(name_or_path) if name_or_path in MODELS else None
    if spec is not None and spec.tiny:
        source: Any = None
    else:
        source = resolve_model(name_or_path)
    model, tok, fresh = build(name_or_path, source, kind, num_labels=num_labels, **kw)
    if fresh:
        shown = ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else "")
        log.warning(
            "%s has no weights for %d tensor(s) of its %s form; they were initialised fresh: %s",
            name_or_path, len(fresh), kind, shown,
        )  # fmt: skip
    object.__setattr__(model, "modularevo_fresh_keys", tuple(fresh))
    return model.eval(), tok


def is_extracted_classifier(folder: str | Path) -> bool:
    """Whether ``folder`` holds a classifier written by ``modularevo extract`` (pruned classes)."""
    cfg = Path(folder) / "config.json"
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    archs = data.get("architectures") or [] if isinstance(data, dict) else []
    return str(data.get("model_type", "")).startswith("modularevo_pruned") and any(
        str(a).endswith("ForSequenceClassification") for a in archs
    )


def _load_extracted_classifier(folder: str | Path) -> tuple[nn.Module, Any]:
    """The pruned classifier and its tokenizer, through the Auto classes (registered by
    ``import modularevo``; no ``trust_remote_code``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


def is_saved_classifier(folder: str | Path) -> bool:
    """Whether ``folder`` holds a classifier saved by ``SequenceClassifier.save_pretrained``."""
    return (Path(folder) / HEAD_CONFIG).is_file()


__all__ = [
    "KINDS",
    "SequenceClassifier",
    "UnknownModelError",
    "allowed_kinds",
    "hub_offline",
    "load_model",
    "resolve_model",
]
