"""The merge recipe's schema: frozen pydantic models, compatible with mergekit YAML.

:class:`MergeConfig` is the whole recipe; :class:`ModelEntry`, :class:`SliceDef`
(with its :class:`SliceSource` entries) and :class:`TokenizerConfig` (with
:class:`TokenEmbedding` and :class:`TokenSource`) are its parts. Field validators check
each value on its own (dtype names, sizes, layer ranges); the checks against the
method's parameters live in :mod:`.recipe_checks`, and :func:`.recipe.load_merge_config`
loads a YAML file into these models.

Example:
    >>> MergeConfig(merge_method="linear", models=[ModelEntry(model="./a")]).shard_bytes
    2000000000
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    **{u: 10 ** (3 * i) for i, u in enumerate(("", "k", "m", "g", "t"), 0) if u},
    **{u + "b": 10 ** (3 * i) for i, u in enumerate(("k", "m", "g", "t"), 1)},
    **{u + "ib": 2 ** (10 * i) for i, u in enumerate(("k", "m", "g", "t"), 1)},
    "b": 10**9,
}


class ModelEntry(BaseModel):
    """One input model: a path, its per-model parameters, an optional module mask file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    mask: str | None = None


class SliceSource(BaseModel):
    """One source of a mergekit slice: a model, the layers ``[start, end)`` taken from it,
    and its per-model parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("layer_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError("must be [start, end) with 0 <= start < end")
        return v


class SliceDef(BaseModel):
    """One output slice of a mergekit ``slices:`` recipe: its sources (all with the same
    number of layers), merged layer by layer, and parameters for this slice."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sources: list[SliceSource] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    base_model: str | None = None
    residual_weight: float | None = None

    @field_validator("sources")
    @classmethod
    def _same_depth(cls, v: list[SliceSource]) -> list[SliceSource]:
        depths = {s.layer_range[1] - s.layer_range[0] for s in v}
        if len(depths) > 1:
            raise ValueError(
                "every source of a slice must span the same number of layers, got "
                + ", ".join(f"{s.model} {list(s.layer_range)}" for s in v)
            )
        return v


class TokenSource(BaseModel):
    """Where a token's embedding row comes from (mergekit 0.1.5's ``source:`` forms):
    ``{kind: model_token, model: M, token: T}`` (or ``token_id: N``) takes row ``T`` of
    model ``M``; ``{kind: zero}`` a zero row. A plain model path (``source: ./m``) is
    read into :class:`TokenEmbedding` as ``model``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["model_token", "zero"]
    model: str | None = None
    token: str | None = None
    token_id: int | None = None

    @model_validator(mode="after")
    def _one_token(self) -> TokenSource:
        if self.kind == "model_token":
            if self.model is None:
                raise ValueError("kind: model_token needs `model:`")
            if (self.token is None) == (self.token_id is None):
                raise ValueError("kind: model_token needs exactly one of `token:` and `token_id:`")
        return self


class TokenEmbedding(BaseModel):
    """One entry of ``tokenizer.tokens``: the row's source and whether it replaces the
    row every model already has (``force``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: TokenSource | str | None = None
    force: bool = False


class TokenizerConfig(BaseModel):
    """mergekit's ``tokenizer:`` block: the output vocabulary (``source``: ``union``, the
    default, ``base`` or a model folder), tokens to add or re-source, and the row count
    rounded up to a multiple (the extra rows get the mean embedding)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = "union"
    tokens: dict[str, TokenEmbedding] | None = None
    pad_to_multiple_of: int | None = Field(default=None, ge=1)


class SliceEntry(ModelEntry):
    """A model entry made from one slice source (internal: the planner's view)."""

    layer_range: tuple[int, int]
    slice_index: int


class MergeConfig(BaseModel):
    """A validated merge recipe (:mod:`modularevo.merging.recipe` shows the YAML form).

    Attributes:
        merge_method: a registered method (``modularevo ls`` lists them).
        base_model: the model task vectors are taken against.
        models: the input models.
        parameters: method parameters; per-model ones here apply to every model.
        dtype: mergekit's dtype; the output dtype when ``out_dtype`` is unset
            (computation is always float32).
        out_dtype: output dtype of float tensors; default: the base model's.
        seed: seeds every random choice (with the tensor name and model index).
        shard_size: output shard size, bytes or e.g. ``"2GB"``.
        missing_tensors: ``error``, or ``base``: a model lacking a tensor the base has
            contributes the base's value (no change); tensors missing from the
            base are left out.
        check_finite: refuse inputs holding NaN or Inf.
        allow_other_base: accept module masks learned on another base than ``base_model``
            (their stored base fingerprint differs).
        tokenizer_source: the output vocabulary (mergekit's tokenizer surgery): ``base``,
            ``union`` (every model's tokens) or a model folder; each model's embedding and
            LM-head rows are aligned to it before the merge (:mod:`.tokenizer`). Unset:
            the base's files are copied and every model must share its vocabulary.
        tokenizer: mergekit's ``tokenizer:`` block (:class:`TokenizerConfig`); not
            together with ``tokenizer_source``.
        chat_template: written into the output's tokenizer: Jinja text, ``chatml``, or
            ``auto`` (the template most of the input models share).
        backend: ``auto`` runs methods with a numpy kernel (``linear``,
            ``task_arithmetic``) on numpy without importing torch when every tensor
            allows it, else on torch; ``torch`` or ``numpy`` force one (``numpy``
            fails with the reason when the recipe needs torch). Both give the same bytes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry] = Field(default_factory=list)
    slices: list[SliceDef] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    seed: int = 0
    shard_size: int | str = "2GB"
    missing_tensors: Literal["error", "base"] = "error"
    check_finite: bool = True
    allow_other_base: bool = False
    tokenizer_source: str | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None
    name: str | None = None
    backend: Literal["auto", "torch", "numpy"] = "auto"

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _known_dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype; use one of {', '.join(sorted(DTYPE_NAMES))}")
        return DTYPE_NAMES[v] if v is not None else None

    @field_validator("shard_size")
    @classmethod
    def _size(cls, v: int | str) -> int | str:
        shard_bytes(v)
        return v

    @model_validator(mode="after")
    def _models_or_slices(self) -> MergeConfig:
        if bool(self.models) == bool(self.slices):
            raise ValueError(
                "give either `models:` (whole models) or `slices:` (layer ranges), not both "
                "and not neither"
            )
        if self.tokenizer is not None and self.tokenizer_source is not None:
            raise ValueError("give `tokenizer_source` or a `tokenizer:` block, not both")
        return self

    @property
    def vocabulary_source(self) -> str | None:
        """The output vocabulary's source (``tokenizer.source`` or ``tokenizer_source``)."""
        return self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source

    @property
    def output_dtype(self) -> str | None:
        """The requested output dtype name, or ``None`` to keep the base's dtypes."""
        return self.out_dtype or self.dtype

    @property
    def shard_bytes(self) -> int:
        """``shard_size`` in bytes."""
        return shard_bytes(self.shard_size)


def shard_bytes(v: int | str) -> int:
    """Parse a size into bytes: ``2GB``, ``500MB``, ``1GiB``, ``5B`` (billion, as in mergekit), 123.

    Raises:
        ValueError: if the text is not a positive size.
    """
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        m = _SIZE.match(str(v))
        unit = (m.group(2) or "").lower() if m else ""
        if not m or unit not in _UNITS:
            raise ValueError("not a size; write e.g. 2GB, 500MB, 1GiB or a number of bytes")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError("must be positive")
    return n
