"""Tokenizer surgery: merge models whose vocabularies differ (mergekit 0.1.5's rules).

:func:`build_vocab_plan` decides the output vocabulary and, for every output token,
where each model's embedding row comes from; :func:`align_rows` (pure tensor code)
applies that to one vocabulary tensor (input embeddings, LM head) of every model
before the merge method sees it, so all inputs index the same tokens.

The output vocabulary (``tokenizer_source`` or ``tokenizer.source``):

* ``base``: the base model's tokenizer (the first model's without a base);
* ``union``: the base's tokenizer plus every other model's tokens it lacks (added in
  model order, as added tokens), then every model's added (special) tokens;
* a model folder: that model's tokenizer.

Then the keys of ``tokenizer.tokens`` it lacks are added. A model's row for token
``t`` is its own row when its tokenizer has ``t`` below its config's ``vocab_size``
(and ``t`` is not ``force``d); otherwise the token's *default* row, decided once for all
models, as mergekit 0.1.5 (``mergekit/tokenizer/embed.py``) does:

1. ``tokens[t].source`` when given: ``{kind: zero}`` a zero row, ``{kind: model_token,
   model: M, token: T | token_id: N}`` row ``T`` (or ``N``) of model ``M`` in its own
   vocabulary, a model path that model's row of ``t``;
2. a token only one model has: that model's row;
3. a token no model has: a zero row;
4. a token the base has: the base's row;
5. else the mean of the rows of the models that have it (summed in model order in
   float32, then divided, as mergekit does in its compute dtype).

With ``pad_to_multiple_of`` the row count is rounded up and every extra row is the mean
of the token rows. The output's ``config.json`` gets the new ``vocab_size`` and the
output tokenizer is saved with the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.io.hf_files import read_config, vocab_size
from modularevo.io.reader import model_dir
from modularevo.merging.recipe_schema import MergeConfig, TokenEmbedding, TokenSource

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

AVERAGE, ROW, ZERO = "average", "row", "zero"


class TokenizerLoadError(InputError):
    """A model folder holds no tokenizer that transformers can load."""


@dataclass(frozen=True)
class TokenDefault:
    """The row a model lacking a token (or forced) gets: ``kind`` is ``average`` (over
    ``rows``), ``row`` (``rows[0]``) or ``zero``; ``rows`` holds (model index, row)."""

    kind: str
    rows: tuple[tuple[int, int], ...] = ()


@dataclass
class VocabPlan:
    """The output vocabulary and, per model, where each output row comes from.

    Attributes:
        tokenizer: the output tokenizer (a transformers tokenizer; saved with the output).
        models: the model paths, in the order of the merge's inputs (base first if any).
        n_tokens: tokens in the output vocabulary.
        size: output rows (``n_tokens`` rounded up to ``pad_to_multiple_of``).
        rows: per model, per output token, the model's own row (-1: take the default).
        defaults: output token id → its default row.
        forced: output token ids whose row is the default in every model (``force``).
        identity: whether every model's rows stay as they are (nothing to align).
    """

    tokenizer: Any
    models: list[str]
    n_tokens: int
    size: int
    rows: list[list[int]]
    defaults: dict[int, TokenDefault] = field(default_factory=dict)
    forced: frozenset[int] = frozenset()
    identity: bool = False

    def index(self, model: str) -> int:
        """The position of ``model`` among :attr:`models`."""
        return self.models.index(model)


def load_tokenizer(path: str) -> Any:
    """The fast tokenizer saved in model folder ``path``.

    Raises:
        InputError: the folder holds no tokenizer transformers can load.
    """
    import transformers  # heavy: imported only for tokenizer surgery

    folder = model_dir(path)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder or path), use_fast=True)
    except Exception as exc:  # transformers raises many kinds
        raise TokenizerLoadError(
            f"{path}: cannot load its tokenizer ({type(exc).__name__}: {exc}); tokenizer "
            "surgery needs each model's tokenizer files (tokenizer.json or "
            "tokenizer.model with tokenizer_config.json)"
        ) from exc


def _rows_of(path: str, tokenizer: Any) -> tuple[dict[str, int], int]:
    """A model's token → row map (tokens at rows ≥ its config's vocab_size left out)."""
    vocab = tokenizer.get_vocab()
    n = vocab_size(read_config(model_dir(path))) or len(vocab)
    return {t: i for t, i in vocab.items() if i < n}, n


def build_vocab_plan(config: MergeConfig, base: str | None, models: list[str]) -> VocabPlan:
    """Build the output tokenizer and each model's row map (see the module docstring).

    Args:
        config: the recipe (``tokenizer_source`` or ``tokenizer:``).
        base: the base model's path, or ``None``.
        models: the input models' paths in input order (base first when it is an input).

    Raises:
        InputError: a tokenizer that cannot be loaded (the base's, the source's, or a
            ``model_token``'s model) or a ``tokens:`` source naming an unknown token.
    """
    spec = config.tokenizer
    source = config.vocabulary_source or "base"
    tokens = dict(spec.tokens or {}) if spec is not None else {}
    pad = spec.pad_to_multiple_of if spec is not None else None
    ref = base or models[0]
    ref_tok = load_tokenizer(ref)
    ref_vocab, ref_n = _rows_of(ref, ref_tok)
    if len(ref_tok.get_vocab()) > ref_n:
        raise InputError(
            f"{ref}: its tokenizer has {len(ref_tok.get_vocab())} tokens but config.json's "
            f"vocab_size is {ref_n}; dropping tokenizer entries beyond the embedding "
            "(mergekit strips BPE vocabularies) is not supported yet"
        )
    vocabs: dict[str, dict[str, int]] = {ref: ref_vocab}
    toks: dict[str, Any] = {ref: ref_tok}
    for m in dict.fromkeys(models):
        if m in vocabs:
            continue
        try:
            toks[m] = load_tokenizer(m)
            vocabs[m] = _rows_of(m, toks[m])[0]
        except TokenizerLoadError as exc:  # mergekit: "assuming same as base"
            log.warning("%s; assuming it is the base's", exc)
            toks[m], vocabs[m] = ref_tok, ref_vocab
    if source == "base":
        out_tok = ref_tok
    elif source == "union":
        out_tok = _union(ref_tok, [(m, toks[m], vocabs[m]) for m in toks if m != ref])
    else:
        out_tok = load_tokenizer(source)
    have = set(out_tok.get_vocab())
    for token in tokens:
        if token not in have:
            out_tok.add_tokens(token)
            have.add(token)
    vocab = out_tok.get_vocab()
    n_tokens = len(vocab)
    size = -(-n_tokens // pad) * pad if pad else n_tokens
    order = sorted(vocab.items(), key=lambda kv: kv[1])
    rows = [[-1] * n_tokens for _ in models]
    for k, m in enumerate(models):
        own = vocabs[m]
        for token, j in order:
            if j < n_tokens:
                rows[k][j] = own.get(token, -1)
    defaults = _defaults(models, base, vocab, rows, tokens, vocabs, n_tokens)
    forced = frozenset(vocab[t] for t, rule in tokens.items() if rule.force)
    identity = not defaults and all(
        r == list(range(n_tokens)) and _n_rows(m) == size for m, r in zip(models, rows, strict=True)
    )
    return VocabPlan(out_tok, list(models), n_tokens, size, rows, defaults, forced, identity)


def _n_rows(path: str) -> int | None:
    return vocab_size(read_config(model_dir(path)))


def _union(base_tok: Any, others: list[tuple[str, Any, dict[str, int]]]) -> Any:
    """mergekit 0.1.5's union: the base's tokenizer (a fresh copy), then each other
    model's ordinary tokens it lacks (as added tokens), then every model's added tokens."""
    import tempfile

    import transformers  # heavy: imported only for tokenizer surgery

    with tempfile.TemporaryDirectory() as tmp:
        base_tok.save_pretrained(tmp)
        out = transformers.AutoTokenizer.from_pretrained(tmp, use_fast=True)
    base_vocab = base_tok.get_vocab()
    added: dict[str, Any] = {}
    new: dict[str, None] = {}
    for tok, rows in [(base_tok, base_vocab), *((t, v) for _, t, v in others)]:
        n = max(rows.values(), default=-1) + 1
        specials = {info.content: info for i, info in tok.added_tokens_decoder.items() if i < n}
        for token in sorted(rows, key=rows.__getitem__):
            if token not in specials and token not in base_vocab:
                new.setdefault(token)
        for content, info in specials.items():
            added.setdefault(content, info)
    for token in new:
        if token not in added:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out


def _defaults(
    models: list[str],
    base: str | None,
    vocab: dict[str, int],
    rows: list[list[int]],
    tokens: dict[str, TokenEmbedding],
    vocabs: dict[str, dict[str, int]],
    n_tokens: int,
) -> dict[int, TokenDefault]:
    """Each output token's default row, for the tokens some model lacks or that are forced."""
    out: dict[int, TokenDefault] = {}
    base_k = models.index(base) if base is not None and base in models else None
    for token, j in vocab.items():
        if j >= n_tokens:
            continue
        rule = tokens.get(token)
        present = [k for k in range(len(models)) if rows[k][j] >= 0]
        if len(present) == len(models) and not (rule and rule.force):
            continue
        if rule is not None:
            if rule.source is None:
                raise InputError(
                    f"tokenizer.tokens[{token!r}]: "
                    + ("`force` needs" if rule.force else "some model lacks it, so it needs")
                    + " a `source:` (a model path, {kind: model_token, model: ..., token: ...}"
                    " or {kind: zero})"
                )
            out[j] = _explicit(rule.source, token, j, models, rows, vocabs)
        elif len(present) == 1:
            out[j] = TokenDefault(ROW, ((present[0], rows[present[0]][j]),))
        elif not present:
            log.warning("token %r is in no model: its row is zero", token)
            out[j] = TokenDefault(ZERO)
        elif base_k is not None and rows[base_k][j] >= 0:
            out[j] = TokenDefault(ROW, ((base_k, rows[base_k][j]),))
        else:
            out[j] = TokenDefault(AVERAGE, tuple((k, rows[k][j]) for k in present))
    return out


def _explicit(
    source: TokenSource | str,
    token: str,
    j: int,
    models: list[str],
    rows: list[list[int]],
    vocabs: dict[str, dict[str, int]],
) -> TokenDefault:
    """The default row named by a ``tokens:`` entry's ``source``.

    Raises:
        InputError: the named model is not an input, or lacks the named token.
    """
    if isinstance(source, TokenSource) and source.kind == "zero":
        return TokenDefault(ZERO)
    model = source if isinstance(source, str) else source.model or ""
    if model not in models:
        raise InputError(
            f"tokenizer.tokens[{token!r}]: its source model {model!r} is not one of the "
            f"merged models ({', '.join(dict.fromkeys(models))})"
        )
    k = models.index(model)
    if isinstance(source, str):
        row = rows[k][j]
        what = f"token {token!r}"
    elif source.token_id is not None:
        row = source.token_id
        what = f"token id {row}"
        n = _n_rows(model)
        if n is not None and not 0 <= row < n:
            row = -1
    else:
        row = vocabs[model].get(source.token or "", -1)
        what = f"token {source.token!r}"
    if row < 0:
        raise InputError(f"tokenizer.tokens[{token!r}]: model {model!r} has no {what}")
    return TokenDefault(ROW, ((k, row),))


def align_rows(tensors: list[Tensor | None], plan: VocabPlan) -> list[Tensor | None]:
    """Re-index every model's vocabulary tensor (rows = tokens) to the output vocabulary.

    Args:
        tensors: per model of ``plan.models``, its tensor (``None``: absent, kept so).
        plan: from :func:`build_vocab_plan`.

    Returns:
        Per model a new float32 ``(plan.size, ...)`` tensor: its own rows where it has
        the token, the token's default row elsewhere, the mean token row in padding
        rows. mergekit 0.1.5 aligns in its compute ``dtype``; the merge here always
        computes in float32, so the rows are aligned in float32 (as mergekit with
        ``dtype: float32``).
    """
    import torch  # the torch backend is chosen whenever tokenizer surgery runs

    held = [t for t in tensors if t is not None]
    dtype = torch.float32
    shape = tuple(held[0].shape[1:])
    default_rows = _default_rows(tensors, plan, shape, dtype)
    out: list[Tensor | None] = []
    for k, t in enumerate(tensors):
        if t is None:
            out.append(None)
            continue
        rows = torch.tensor(plan.rows[k], dtype=torch.long)
        new = torch.zeros((plan.size, *shape), dtype=dtype)
        own = (rows >= 0).nonzero().flatten()
        new[own] = t[rows[own]].to(dtype)
        missing = [j for j in plan.defaults if plan.rows[k][j] < 0 or j in plan.forced]
        if missing:
            idx = torch.tensor(missing, dtype=torch.long)
            new[idx] = default_rows[idx]
        if plan.size > plan.n_tokens:
            new[plan.n_tokens :] = torch.mean(new[: plan.n_tokens], dim=0)
        out.append(new)
    return out


def _default_rows(
    tensors: list[Tensor | None], plan: VocabPlan, shape: tuple[int, ...], dtype: Any
) -> Tensor:
    """A ``(n_tokens, ...)`` tensor holding each default row (zeros elsewhere)."""
    import torch  # the torch backend is chosen whenever tokenizer surgery runs

    rows = torch.zeros((plan.n_tokens, *shape), dtype=dtype)
    avg = [j for j, d in plan.defaults.items() if d.kind == AVERAGE]
    for j, d in plan.defaults.items():
        if d.kind == ROW:
            k, r = d.rows[0]
            src = tensors[k]
            if src is None:
                raise InputError(f"token row {r} is taken from {plan.models[k]}, which lacks it")
            rows[j] = src[r].to(dtype)
    if avg:  # mergekit: zeros + row of each model that has it, in model order, then / count
        idx = torch.tensor(avg, dtype=torch.long)
        acc = torch.zeros((len(avg), *shape), dtype=dtype)
        count = torch.zeros(len(avg), dtype=dtype)
        for k, t in enumerate(tensors):
            r = torch.tensor([plan.rows[k][j] for j in avg], dtype=torch.long)
            has = (r >= 0).nonzero().flatten()
            if t is None or not len(has):
                continue
            acc[has] = acc[has] + t[r[has]].to(dtype)
            count[has] += 1
        acc /= count.reshape(-1, *([1] * len(shape)))
        rows[idx] = acc
    return rows


def save_tokenizer(plan: VocabPlan, folder: Path) -> None:
    """Save the output tokenizer into ``folder`` (tokenizer.json, tokenizer_config.json ...)."""
    plan.tokenizer.save_pretrained(str(folder))
