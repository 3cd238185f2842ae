"""Cross-checks of the merge inputs (headers only), used by :mod:`modularevo.merging.plan`.

Each check gathers every problem of its kind and raises one :class:`InputError`
naming the tensors, what was found, what was expected and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from modularevo.errors import InputError
from modularevo.io.dtypes import BF16_EXPONENT, bf16_has_nonfinite
from modularevo.io.hf_files import vocab_size
from modularevo.io.reader import ModelReader

_MAX_LISTED = 8
_TIE_HINT = re.compile(r"(embed|wte|shared|lm_head|decoder|word_embeddings)")
_VOCAB_HINT = re.compile(r"(embed_tokens|wte|shared|lm_head|embed_out|word_embeddings|decoder)")


def vocab_tensors(reader: ModelReader, n_vocab: int | None) -> list[str]:
    """The float tensors of ``reader`` indexed by token on their first axis (input
    embeddings, LM head): an embedding-like name and ``n_vocab`` rows."""
    if n_vocab is None:
        return []
    return [
        n
        for n, info in reader.tensors.items()
        if info.is_float and info.shape and info.shape[0] == n_vocab and _VOCAB_HINT.search(n)
    ]


def _raise(title: str, problems: list[str], fix: str) -> None:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    lines = "\n".join(f"  - {p}" for p in shown) + (f"\n  - … and {more} more" if more else "")
    raise InputError(f"{title}:\n{lines}\n{fix}")


def _examples(names: set[str]) -> str:
    ordered = sorted(names)
    more = f" (+{len(ordered) - 3} more)" if len(ordered) > 3 else ""
    return ", ".join(repr(n) for n in ordered[:3]) + more


def check_names(
    readers: Sequence[ModelReader], labels: Sequence[str], *, missing: str
) -> list[str]:
    """Compare tensor names with the reference (``readers[0]``).

    Args:
        readers: reference first, then the other inputs.
        labels: their paths, for messages.
        missing: ``error`` (any difference is an error) or ``base`` (tolerated).

    Returns:
        Names some input has but the reference lacks (left out of the output).

    Raises:
        InputError: if names differ and ``missing`` is ``error``.
    """
    ref = set(readers[0].tensors)
    problems: list[str] = []
    dropped: set[str] = set()
    for r, label in zip(readers[1:], labels[1:], strict=False):
        names = set(r.tensors)
        lacks, extra = ref - names, names - ref
        dropped |= extra
        if lacks:
            problems.append(
                f"{label} lacks {len(lacks)} tensor(s) that {labels[0]} has: {_examples(lacks)}"
            )
        if extra:
            problems.append(
                f"{label} has {len(extra)} tensor(s) that {labels[0]} lacks: {_examples(extra)}"
            )
    if problems and missing == "error":
        _raise(
            "the models do not hold the same tensors (expected one architecture)",
            problems,
            "Merge models of the same architecture, or set `missing_tensors: base` to let a "
            "model lacking a tensor keep the base's value and leave out tensors the base lacks.",
        )
    return sorted(dropped)


def check_shapes(
    readers: Sequence[ModelReader],
    labels: Sequence[str],
    configs: Sequence[dict[str, Any]],
    *,
    vocab_aligned: bool = False,
) -> None:
    """Check that shared tensors have equal shapes and kinds (float or not) everywhere.

    With ``vocab_aligned`` (tokenizer surgery re-indexes the vocabulary tensors) differing
    vocabulary sizes are allowed.

    Raises:
        InputError: listing every mismatch; differing vocabularies get their own message.
    """
    ref = readers[0]
    ref_vocab = vocab_size(configs[0])
    problems: list[str] = []
    vocab_problems: list[str] = []
    for r, label, cfg in zip(readers[1:], labels[1:], configs[1:], strict=False):
        for name, info in r.tensors.items():
            want = ref.tensors.get(name)
            if want is None:
                continue
            if want.shape != info.shape:
                line = (
                    f"{name!r}: {label} has {list(info.shape)}, {labels[0]} has {list(want.shape)}"
                )
                if _is_vocab_mismatch(want.shape, info.shape, ref_vocab, vocab_size(cfg)):
                    vocab_problems.append(f"{line} (vocab_size {vocab_size(cfg)} vs {ref_vocab})")
                else:
                    problems.append(line)
            elif want.is_float != info.is_float:
                problems.append(
                    f"{name!r}: {label} stores {info.dtype_info.name}, "
                    f"{labels[0]} stores {want.dtype_info.name}"
                )
    if problems:  # other sizes first: a hidden-size mismatch is not a vocabulary one
        _raise(
            "tensor shapes or kinds differ between the models",
            problems + vocab_problems,
            "Merge models of one architecture and size (same config.json).",
        )
    if vocab_problems and not vocab_aligned:
        _raise(
            "the models have different vocabulary sizes",
            vocab_problems,
            "Merge models that share one tokenizer, or resize the embeddings of the others to "
            "the base's vocabulary first (model.resize_token_embeddings(n); save_pretrained).",
        )


def _is_vocab_mismatch(
    a: tuple[int, ...], b: tuple[int, ...], va: int | None, vb: int | None
) -> bool:
    if not a or len(a) != len(b) or a[1:] != b[1:]:
        return False
    return (va is not None and a[0] == va) or (vb is not None and b[0] == vb)


def find_tied_groups(readers: Sequence[ModelReader], config: dict[str, Any]) -> dict[str, str]:
    """Tensors stored twice with equal values in every input (tied embeddings).

    Candidates are embedding-like names of equal shape; they count as tied when
    their values are equal in every model (and the config does not say untied).

    Returns:
        ``{alias name: name it is tied to}``.
    """
    if config.get("tie_word_embeddings") is False:
        return {}
    ref = readers[0]
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, info in ref.tensors.items():
        if info.is_float and len(info.shape) == 2 and _TIE_HINT.search(name):
            groups.setdefault((info.shape, info.code), []).append(name)
    tied: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        names.sort(key=lambda n: ("lm_head" in n or "decoder" in n, n))
        head = names[0]
        for other in names[1:]:
            if all(_equal_in(r, head, other) for r in readers):
                tied[other] = head
    return tied


def _equal_in(r: ModelReader, a: str, b: str) -> bool:
    if a not in r or b not in r:
        return False
    try:
        return bool(np.array_equal(r.read_numpy(a), r.read_numpy(b)))
    finally:
        r.release(a)
        r.release(b)


def open_masks(paths: Sequence[str | None], tensor_names: Collection[str]) -> list[Any]:
    """Open each model's module mask file (``None`` stays ``None``), under the names of
    ``tensor_names`` (a module learned on ``BertForMaskedLM`` fits a bare encoder's
    tensors; :func:`modularevo.modules.naming.match_names`)."""
    return [_open_module(p, tensor_names) if p else None for p in paths]


def _open_module(path: str, tensor_names: Collection[str]) -> Any:
    """The single place that reads module mask files (``modularevo.modules.io``)."""
    # deferred: module files need torch, and merges without masks run torch-free
    from modularevo.modules.io import open_module
    from modularevo.modules.naming import fit_masks

    return fit_masks(open_module(path), tensor_names)


def check_masks(
    masks: Sequence[Any],
    entries: Sequence[Any],
    ref: ModelReader,
    *,
    allow_other_base: bool = False,
) -> None:
    """Check every mask names a tensor of the model, has its shape and, unless
    ``allow_other_base``, was learned on this base (the module file's base fingerprint).

    Raises:
        InputError: listing each mask whose tensor is missing, whose shape differs, or
            whose module was learned on another base.
    """
    problems: list[str] = []
    for reader, entry in zip(masks, entries, strict=False):
        if reader is None:
            continue
        shapes = getattr(reader, "shapes", None) or {
            n: tuple(reader.mask(n).shape) for n in reader.names()
        }
        for name, shape in shapes.items():
            info = ref.tensors.get(name)
            if info is None:
                problems.append(f"{entry.mask}: masks {name!r}, which the models do not have")
            elif tuple(shape) != info.shape:
                problems.append(
                    f"{entry.mask}: mask {name!r} is {list(shape)} but the tensor is "
                    f"{list(info.shape)}"
                )
    if problems:
        _raise(
            "module masks do not fit the models",
            problems,
            "Use masks learned on this architecture (re-run `modularevo modularize` on the base).",
        )
    if not allow_other_base:
        _check_mask_bases(masks, entries, ref)


def _check_mask_bases(masks: Sequence[Any], entries: Sequence[Any], ref: ModelReader) -> None:
    """Compare each module's stored base fingerprint with the reference model's tensors."""
    from modularevo.modules.mask import fingerprint  # deferred: torch, only for masked merges

    problems: list[str] = []
    for reader, entry in zip(masks, entries, strict=False):
        stored = getattr(reader, "base_fingerprint", "") if reader is not None else ""
        if reader is None or not stored:
            continue
        names = sorted(reader.names())
        # the fingerprint hashes the names the module was saved with (a module of
        # ``bert.encoder…`` fits a base saved as ``encoder…``; modules.naming)
        stored_as = getattr(reader, "stored_name", lambda n: n)
        got = fingerprint((stored_as(n), ref.read(n)) for n in names)
        for n in names:
            ref.release(n)
        if got != stored:
            problems.append(f"{entry.mask}: learned on base {stored}, this base is {got}")
    if problems:
        _raise(
            "module masks were learned on another base model (their fingerprints differ)",
            problems,
            "Use the modules learned on this base_model, or set `allow_other_base: true` in the "
            "recipe if applying them to this base is intended.",
        )


def _bad_count(t: Any) -> tuple[int, int]:
    """(NaN/Inf count, numel) of a torch tensor or numpy array (``uint16`` = BF16 bits)."""
    if isinstance(t, np.ndarray):
        if t.dtype == np.uint16:  # bf16 bit patterns: exponent all ones is Inf/NaN
            if not bf16_has_nonfinite(t):  # blockwise: no tensor-sized temporaries
                return 0, int(t.size)
            return int(((t & BF16_EXPONENT) == BF16_EXPONENT).sum()), int(t.size)
        if not np.issubdtype(t.dtype, np.floating):
            return 0, int(t.size)
        return int((~np.isfinite(t)).sum()), int(t.size)
    if not t.is_floating_point():
        return 0, t.numel()
    import torch

    finite = torch.isfinite(t)
    if bool(finite.all()):
        return 0, t.numel()
    return int((~finite).sum()), t.numel()


def check_merged_finite(t: Any, name: str, params: dict[str, Any]) -> None:
    """Refuse to publish a merged tensor holding NaN/Inf (the inputs were finite).

    Args:
        t: the merged tensor, in its output dtype.
        name: its name.
        params: the method's parameters for it (named in the message).

    Raises:
        InputError: naming the tensor, the count, the parameters and the likeliest culprit.
    """
    bad, numel = _bad_count(t)
    if not bad:
        return
    numbers = {k: v for k, v in params.items() if _magnitude(v) is not None}
    shown = ", ".join(f"{k}={v!r}" for k, v in numbers.items()) or "none"
    culprit = max(numbers, key=lambda k: _magnitude(numbers[k]) or 0.0, default=None)
    blame = f"; the likeliest cause is {culprit}={numbers[culprit]!r}" if culprit else ""
    raise InputError(
        f"merged tensor {name!r} has {bad} NaN/Inf value(s) of {numel}, though every input is "
        f"finite: the merge overflowed its output dtype (parameters: {shown}){blame}. "
        "Use parameter values of ordinary size (lambda and weights near 1); nothing was written"
    )


def _magnitude(v: Any) -> float | None:
    """Largest |number| in a number or a list of numbers (``None`` if it is neither)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return abs(float(v))
    if isinstance(v, list | tuple) and v and all(_magnitude(x) is not None for x in v):
        return max(_magnitude(x) or 0.0 for x in v)
    return None
