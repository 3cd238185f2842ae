"""One naming of weights across stages: match a module's mask names to a model's tensors.

The same weight has several names depending on how a model was loaded or saved. A module
learned on ``BertForMaskedLM`` names ``bert.encoder.layer.0…``; a fine-tune saved from the
bare encoder names ``encoder.layer.0…``; the classifier wrapper in memory names
``backbone.encoder.layer.0…``. Every stage that applies a mask to weights (mask-guided
fine-tuning, the module-aware merge, extraction) maps names with :func:`match_names`, so a
module, a fine-tune and a merge of the same base always fit each other.

The rule: names that already match are kept. Otherwise the mask names lose a leading
prefix of at most two components (``bert.``) and/or gain one (``backbone.``), the same for
every name, keeping at least their last three components; the first such rule under which
at least half of the masks (and at least one) name a tensor wins.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

_MAX_STRIP = 2
_MIN_KEPT = 3


def match_names(mask_names: Iterable[str], param_names: Collection[str]) -> dict[str, str]:
    """Map each mask name to the tensor of ``param_names`` it masks.

    Args:
        mask_names: names stored in a module file.
        param_names: names of the model's tensors (state dict or safetensors header).

    Returns:
        mask name -> tensor name for the masks that fit; empty when no rule fits (another
        architecture). Masks of tensors the model lacks (e.g. an LM head) are left out.
    """
    names = sorted(mask_names)
    params = set(param_names)
    if all(n in params for n in names):
        return {n: n for n in names}
    for probe in names:
        parts = probe.split(".")
        # drop at most two leading components, and keep at least three (layer, module, kind)
        for k in range(min(_MAX_STRIP, len(parts) - _MIN_KEPT) + 1):
            suffix = ".".join(parts[k:])
            strip = ".".join(parts[:k])
            for hit in sorted(p for p in params if p == suffix or p.endswith("." + suffix)):
                add = hit[: len(hit) - len(suffix)]
                mapping = {
                    n: add + n[len(strip) + 1 if strip else 0 :]
                    for n in names
                    if not strip or n.startswith(strip + ".")
                }
                mapped = {n: p for n, p in mapping.items() if p in params}
                if len(mapped) >= max(1, len(names) // 2):
                    return mapped
    return {}


class RenamedMasks:
    """A module reader seen under a model's tensor names (see :func:`match_names`).

    Args:
        reader: a :class:`~modularevo.modules.io.ModuleReader` (or anything with
            ``names()``, ``mask(name)``, ``shapes`` and ``path``).
        mapping: mask name -> tensor name.
    """

    def __init__(self, reader: Any, mapping: Mapping[str, str]) -> None:
        self.reader = reader
        self._stored = {param: mask for mask, param in mapping.items()}
        self.shapes = {p: tuple(reader.shapes[m]) for p, m in self._stored.items()}
        self.dropped = sorted(set(reader.names()) - set(mapping))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def names(self) -> list[str]:
        """Tensor names that have a mask."""
        return sorted(self.shapes)

    def stored_name(self, name: str) -> str:
        """The name the module file stores for tensor ``name``."""
        return self._stored[name]

    def mask(self, name: str) -> Any:
        """The bool mask of tensor ``name``, or ``None`` when it has none."""
        stored = self._stored.get(name)
        return None if stored is None else self.reader.mask(stored)


def fit_masks(reader: Any, param_names: Collection[str]) -> Any:
    """``reader`` under the names of ``param_names`` (itself when the names already match).

    When no rule fits, the reader comes back unchanged, so the caller's shape and name
    checks report the mismatch.
    """
    names = reader.names()
    mapping = match_names(names, param_names)
    if not mapping or mapping == {n: n for n in names}:
        return reader
    return RenamedMasks(reader, mapping)
