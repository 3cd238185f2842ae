"""Plan tokenizer surgery: the output vocabulary and which tensors' rows are re-indexed.

:func:`tokenizer_dir` picks the folder whose config and tokenizer files the output
gets; :func:`plan_vocabulary` builds the output vocabulary (:mod:`.tokenizer`) and
records it on the plan, or falls back to copying the source's files when they share
the merged models' vocabulary size (:func:`check_same_vocab`).
"""

from __future__ import annotations

from pathlib import Path

from modularevo.errors import InputError
from modularevo.io.hf_files import read_config, vocab_size
from modularevo.io.reader import model_dir
from modularevo.merging._checks import vocab_tensors
from modularevo.merging.plan_types import MergePlan
from modularevo.merging.recipe_schema import MergeConfig
from modularevo.merging.tokenizer import TokenizerLoadError, build_vocab_plan


def tokenizer_dir(config: MergeConfig, first_model: str) -> Path | None:
    """The folder whose config and tokenizer files the output gets.

    ``tokenizer_source`` unset, ``base`` or ``union`` (mergekit's keywords): the base
    model's folder (the first model's without a base); otherwise the named model folder
    (tokenizer surgery then saves the output tokenizer over its files, see
    :func:`plan_vocabulary`).

    Raises:
        InputError: the named source is not a model folder.
    """
    source = config.vocabulary_source
    if source is None or source in ("base", "union"):
        return model_dir(config.base_model or first_model)
    found = model_dir(source)
    if found is None:
        raise InputError(
            f"tokenizer_source {source!r} is not a model folder; expected `base`, `union` or "
            "the folder of a model whose tokenizer the output should get"
        )
    return found


def plan_vocabulary(plan: MergePlan) -> None:
    """Tokenizer surgery (:mod:`.tokenizer`): the output vocabulary, each input's row map
    and the vocabulary tensors to re-index; nothing without ``tokenizer_source`` or
    ``tokenizer:``.

    A ``tokenizer_source`` (``base`` or a folder) whose tokenizer transformers cannot
    load falls back to copying its files, which needs every model to share the base's
    vocabulary size.

    Raises:
        InputError: a tokenizer cannot be loaded (``union``, ``tokenizer:``), the
            source's vocabulary size differs in the fallback, or surgery meets a feature
            it does not combine with yet (module masks, a global trim).
    """
    cfg = plan.config
    if cfg.vocabulary_source is None:
        return
    paths = plan.input_paths
    base = cfg.base_model if cfg.base_model in (*paths, None) else None
    try:
        vocab = build_vocab_plan(cfg, base or None, paths)
    except TokenizerLoadError as exc:
        if cfg.tokenizer is not None or cfg.vocabulary_source == "union":
            raise
        check_same_vocab(cfg, plan.source_dir, paths[0])
        plan.notes.append(f"{exc}; its tokenizer files are copied as they are")
        return
    ref_n = vocab_size(read_config(model_dir(paths[0])))
    names = frozenset(vocab_tensors(plan.reference, ref_n))
    if not vocab.identity and (plan.method.uses_masks or plan.needs_thresholds()):
        raise InputError(
            "tokenizer surgery with module masks or a global trim (trim_scope: global) is "
            "not supported yet"
        )
    plan.vocab, plan.vocab_names = vocab, names
    plan.config_updates["vocab_size"] = vocab.size
    plan.notes.append(
        f"tokenizer surgery ({cfg.vocabulary_source}): {vocab.n_tokens} tokens, "
        f"{vocab.size} rows; "
        + ("no row moves" if vocab.identity else f"re-indexed: {', '.join(sorted(names))}")
    )


def check_same_vocab(config: MergeConfig, source: Path | None, first: str) -> None:
    """Copying a tokenizer's files needs its vocabulary size to be the merged models'."""
    ref = model_dir(config.base_model or first)
    want, got = vocab_size(read_config(ref)), vocab_size(read_config(source))
    if want is not None and got is not None and want != got:
        raise InputError(
            f"tokenizer_source {config.vocabulary_source!r} has a vocabulary of {got} tokens "
            f"but the merged models have {want}, and its tokenizer cannot be loaded to align "
            "the embeddings to it (tokenizer surgery needs tokenizer.json or tokenizer.model)"
        )
