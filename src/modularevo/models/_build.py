"""Instantiate a model of one kind from a resolved source (folder, Hub name or tiny config)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from modularevo.errors import InputError
from modularevo.models.heads import HEAD_CONFIG, SequenceClassifier

log = logging.getLogger(__name__)


def _role(config: Any) -> str:
    from modularevo.models.load import allowed_kinds

    kinds = allowed_kinds(config)
    if "seq2seq" in kinds:
        return "encoder-decoder"
    return "encoder-only" if "masked_lm" in kinds else "decoder-only"


def _config_and_tokenizer(name: str, source: str | None) -> tuple[Any, Any]:
    if source is None:
        from modularevo.models._tiny import tiny_config, tiny_tokenizer

        return tiny_config(name), tiny_tokenizer(name)
    from transformers import AutoConfig, AutoTokenizer

    try:
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
    import transformers as tf

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
        from modularevo.models._tiny import build_tiny_from

        return build_tiny_from(config, auto_cls), []
    model, info = auto_cls.from_pretrained(source, output_loading_info=True, **kw)
    return model, sorted(info.get("missing_keys", []))


def _encoder_of(model: nn.Module) -> nn.Module:
    if type(model).__name__ == "EncoderDecoderModel":
        return model.encoder  # type: ignore[return-value]
    return model


def build(
    name: str, source: str | None, kind: str, *, num_labels: int | None, **kw: Any
) -> tuple[nn.Module, Any, list[str]]:
    """Return (model, tokenizer, names of freshly initialised tensors).

    Raises:
        InputError: if ``kind`` does not suit the model's architecture.
    """
    from modularevo.models.load import allowed_kinds, is_saved_classifier

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
        import json
        from pathlib import Path

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
