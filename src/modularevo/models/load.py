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
from collections.abc import Iterator
from contextlib import contextmanager
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
    spec = MODELS.get(name_or_path) if name_or_path in MODELS else None
    if spec is not None and spec.tiny:
        source: Any = None
    else:
        source = resolve_model(name_or_path)
    model, tok, fresh = _build(name_or_path, source, kind, num_labels=num_labels, **kw)
    if fresh:
        shown = ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else "")
        # a new classifier head is what fine-tuning trains: no reason to warn about it
        head_only = kind == "classifier" and set(fresh) <= {"classifier.weight", "classifier.bias"}
        (log.info if head_only else log.warning)(
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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own load report and progress bar around a project load.

    ``load_model`` reports what matters once, in its own words: the tensors a kind adds
    fresh (an MLM head MiniLM does not ship, a classifier head). transformers would
    print the same as a LOAD REPORT table, a "checkpoint seem corrupted" note for
    MiniLM's absent MLM head and a "Loading weights" bar on every load. Its errors
    still show. Tokenizers truncate explicitly in this project, so the "sequence
    length is longer than the maximum" note stays off after the first load too.
    """
    from transformers.utils import logging as hf_logging  # deferred: heavy import

    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _role(config: Any) -> str:
    kinds = allowed_kinds(config)
    if "seq2seq" in kinds:
        return "encoder-decoder"
    return "encoder-only" if "masked_lm" in kinds else "decoder-only"


def _config_and_tokenizer(name: str, source: str | None) -> tuple[Any, Any]:
    if source is None:
        from modularevo.models._tiny import tiny_config, tiny_tokenizer  # deferred: transformers

        return tiny_config(name), tiny_tokenizer(name)
    from transformers import AutoConfig, AutoTokenizer  # deferred: heavy import

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
            tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise InputError(
            f"could not load model {name!r} from {source!r} ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}); pass a local folder written by save_pretrained, "
            "or an embedded model name (modularevo models ls)"
        ) from None
    return config, tok


def _auto_class(kind: str, config: Any) -> Any:
    import transformers as tf  # deferred: heavy import

    if kind == "causal_lm":
        return tf.AutoModelForCausalLM
    if kind == "masked_lm":
        return tf.AutoModelForMaskedLM
    if kind == "seq2seq":
        return tf.AutoModelForSeq2SeqLM
    # encoder, or a classifier backbone: the model without its LM head
    if getattr(config, "is_encoder_decoder", False):
        return (
            tf.EncoderDecoderModel
            if config.model_type == "encoder-decoder"
            else (tf.AutoModelForTextEncoding)
        )
    return tf.AutoModel


def _instantiate(
    auto_cls: Any, config: Any, source: str | None, kw: dict[str, Any]
) -> tuple[nn.Module, list[str]]:
    if source is None:
        # deferred: _tiny imports transformers
        from modularevo.models._tiny import build_tiny_kind

        return build_tiny_kind(config, auto_cls), []
    with quiet_transformers():
        model, info = auto_cls.from_pretrained(source, output_loading_info=True, **kw)
    return model, sorted(info.get("missing_keys", []))


def _encoder_of(model: nn.Module) -> nn.Module:
    if type(model).__name__ == "EncoderDecoderModel":
        return model.encoder  # type: ignore[return-value]
    return model


def _build(
    name: str, source: str | None, kind: str, *, num_labels: int | None, **kw: Any
) -> tuple[nn.Module, Any, list[str]]:
    """Return (model, tokenizer, names of freshly initialised tensors).

    Raises:
        InputError: if ``kind`` does not suit the model's architecture.
    """
    config, tok = _config_and_tokenizer(name, source)
    allowed = allowed_kinds(config)
    if kind not in allowed:
        raise InputError(
            f"model {name!r} is an {_role(config)} {config.model_type!r} model and cannot be "
            f"loaded as kind {kind!r}; use one of: {', '.join(allowed)}"
        )
    pooling = kw.pop("pooling", None)
    dropout = kw.pop("dropout", 0.1)
    model, fresh = _instantiate(_auto_class(kind, config), config, source, kw)
    if kind == "encoder":
        model = _encoder_of(model)
    _ensure_pad(tok, config)
    if kind != "classifier":
        return model, tok, fresh
    saved = source is not None and is_saved_classifier(source)
    if saved and source is not None:
        head_cfg = json.loads((Path(source) / HEAD_CONFIG).read_text(encoding="utf-8"))
        pooling = pooling or head_cfg["pooling"]
        num_labels = head_cfg["num_labels"] if num_labels is None else num_labels
    pooling = pooling or ("last" if allowed[0] == "causal_lm" else "mean")
    assert num_labels is not None
    clf = SequenceClassifier(_encoder_of(model), num_labels, pooling=pooling, dropout=dropout)
    if saved:
        clf.load_head(str(source))
        return clf, tok, fresh
    return clf, tok, [*fresh, "classifier.weight", "classifier.bias"]


def _ensure_pad(tok: Any, config: Any) -> None:
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
        log.info("tokenizer has no pad token; using eos %r for padding", tok.eos_token)
    if getattr(config, "pad_token_id", None) is None and getattr(tok, "pad_token_id", None):
        config.pad_token_id = tok.pad_token_id
