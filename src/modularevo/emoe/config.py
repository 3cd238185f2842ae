"""Typed, frozen settings of an EMoE conversion (arXiv 2310.10908).

YAML form (every key optional)::

    experts: 16        # E, must divide the FFN width d_ff
    top_k: 4           # experts kept per token, 1 <= k <= E
    layers: last2      # [10, 11], "last N" or "all" (0-based FFN layer indices)
    seed: 0            # k-means++ seed of the balanced clustering
    max_iter: 100      # balanced k-means rounds at most (stops once stable)
    assign: auto       # auto | lap (exact, scipy) | greedy (fast, any size)
    refresh_gates: true  # gates = mean of current keys at every training forward

Example:
    >>> EMoEConfig(experts=16, top_k=4, layers=[10, 11]).layers
    [10, 11]
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modularevo.config.load import validate
from modularevo.errors import ConfigError, InputError

_LAST = re.compile(r"^last\s*[-_ ]?\s*(\d+)$")


class EMoEConfig(BaseModel):
    """How to turn dense FFNs into EMoE layers.

    Attributes:
        experts: number of experts E per converted FFN (paper: 16 for BERT scripts, 64).
        top_k: experts selected per token (paper: E/4).
        layers: FFN layer indices (0-based, negative counts from the end), ``"last N"``
            or ``"all"``; the reference's BERT default is the last two layers.
        seed: seed of the k-means++ initialisation of the balanced clustering.
        max_iter: at most this many balanced k-means rounds.
        assign: the equal-size assignment solver (see ``balanced_assign``).
        refresh_gates: recompute the avg-k gates from the current keys in every training
            forward pass (the reference's per-step ``update_one_score_gate``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experts: int = Field(16, ge=1)
    top_k: int = Field(4, ge=1)
    layers: list[int] | str = "last2"
    seed: int = 0
    max_iter: int = Field(100, ge=1)
    assign: Literal["auto", "lap", "greedy"] = "auto"
    refresh_gates: bool = True

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, str):
            text = v.strip().lower()
            if text != "all" and not _LAST.match(text):
                raise ValueError(
                    f"layers must be a list of indices, 'last N' or 'all', got {v!r}; "
                    "e.g. layers: [10, 11] or layers: last2"
                )
            return text.replace(" ", "")
        if not v:
            raise ValueError("layers is empty; name at least one FFN layer, e.g. [10, 11]")
        if len(set(v)) != len(v):
            raise ValueError(f"layers has duplicates: {v}")
        return v

    @model_validator(mode="after")
    def _check_k(self) -> EMoEConfig:
        if self.top_k > self.experts:
            raise ValueError(
                f"top_k={self.top_k} is larger than experts={self.experts}; "
                "choose top_k <= experts (the paper uses top_k = experts / 4)"
            )
        return self


def as_config(cfg: EMoEConfig | dict[str, Any] | None = None, **overrides: Any) -> EMoEConfig:
    """Validate a config, a dict, or keyword settings into an :class:`EMoEConfig`.

    Raises:
        ConfigError: listing every invalid setting.
    """
    data: dict[str, Any] = {}
    if isinstance(cfg, EMoEConfig):
        data = cfg.model_dump()
    elif cfg is not None:
        data = dict(cfg)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(EMoEConfig, data, source="EMoE config")


def resolve_layers(spec: list[int] | str, n_layers: int) -> list[int]:
    """Turn a layer spec into sorted 0-based indices of the model's FFN layers.

    Raises:
        InputError: for an index outside the model or more layers than it has.
    """
    if isinstance(spec, str):
        if spec == "all":
            return list(range(n_layers))
        match = _LAST.match(spec)
        if match is None:
            raise ConfigError([f"layers: expected a list, 'last N' or 'all', got {spec!r}"])
        count = int(match.group(1))
        if not 1 <= count <= n_layers:
            raise InputError(
                f"layers {spec!r} asks for {count} layers but the model has {n_layers} FFN "
                f"layers; use a number in [1, {n_layers}]"
            )
        return list(range(n_layers - count, n_layers))
    out = []
    for i in spec:
        if not -n_layers <= i < n_layers:
            raise InputError(
                f"unknown layer {i}: the model has {n_layers} FFN layers (valid indices 0.."
                f"{n_layers - 1}, or -{n_layers}..-1); fix `layers`"
            )
        out.append(i % n_layers)
    if len(set(out)) != len(out):
        raise InputError(f"layers {spec} name the same layer twice (after resolving negatives)")
    return sorted(out)
