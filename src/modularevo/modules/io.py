"""Module files: bit-packed masks in safetensors, with metadata.

Format ``modularevo-module/1``: one uint8 tensor per masked parameter (bits packed
by :func:`~modularevo.modules.mask.pack_bits`), and string metadata holding the
format tag, JSON-encoded shapes, domain, fingerprints, densities and config.
A reader opens the file memory-mapped and unpacks one mask at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import Tensor

from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask, fingerprint, pack_bits, unpack_bits
from modularevo.modules.naming import match_names
from modularevo.utils.atomic import atomic_save_file

FORMAT = "modularevo-module/1"


def level_tag(level: float) -> str:
    """File-name tag of a snapshot level (``module-<tag>.safetensors``): 0.25 -> ``"0.25"``."""
    return f"{level:.2f}".rstrip("0").rstrip(".") if level < 1 else "1"


def save_module(module: ModuleMask, path: str | Path) -> Path:
    """Write ``module`` to ``path`` (a ``.safetensors`` file), atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: pack_bits(m) for n, m in module.masks.items()}
    meta = {
        "format": FORMAT,
        "shapes": json.dumps({n: list(m.shape) for n, m in module.masks.items()}),
        "domain": module.domain,
        "arch_fingerprint": module.arch_fingerprint,
        "base_fingerprint": module.base_fingerprint,
        "density": f"{module.density():.6f}",
        "density_per_param": json.dumps(module.density_per_param()),
        "metadata": json.dumps(dict(module.metadata), default=str),
    }
    return atomic_save_file(tensors, path, metadata=meta)


class ModuleReader:
    """Memory-mapped access to a module file, one mask at a time.

    Raises:
        InputError: if the file is missing, not safetensors, or not a module file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"module file {str(self.path)!r} does not exist")
        try:
            self._fh = safe_open(str(self.path), framework="pt")
            meta = self._fh.metadata() or {}
        except Exception as exc:
            raise InputError(
                f"{str(self.path)!r} is not a readable safetensors file ({exc}); "
                "re-create it with `modularevo modularize`"
            ) from None
        if meta.get("format") != FORMAT:
            raise InputError(
                f"{str(self.path)!r} is not a modularevo module file "
                f"(format {meta.get('format')!r}, expected {FORMAT!r})"
            )
        self.shapes: dict[str, tuple[int, ...]] = {
            n: tuple(s) for n, s in json.loads(meta["shapes"]).items()
        }
        self.domain = meta.get("domain", "")
        self.arch_fingerprint = meta.get("arch_fingerprint", "")
        self.base_fingerprint = meta.get("base_fingerprint", "")
        self.metadata: dict[str, Any] = json.loads(meta.get("metadata", "{}"))
        self.density = float(meta.get("density", "nan"))

    def names(self) -> list[str]:
        """Parameter names the module has a mask for."""
        return sorted(self.shapes)

    def mask(self, name: str) -> Tensor | None:
        """The bool mask of parameter ``name``, or ``None`` when it has none."""
        if name not in self.shapes:
            return None
        return unpack_bits(self._fh.get_tensor(name), self.shapes[name])

    def to_module(self) -> ModuleMask:
        """Read every mask into a :class:`ModuleMask`."""
        masks = {n: self.mask(n) for n in self.names()}
        return ModuleMask(
            masks={n: m for n, m in masks.items() if m is not None},
            domain=self.domain,
            arch_fingerprint=self.arch_fingerprint,
            base_fingerprint=self.base_fingerprint,
            metadata=self.metadata,
        )


def open_module(path: str | Path) -> ModuleReader:
    """Open a module file for lazy, per-tensor reads."""
    return ModuleReader(path)


def load_module(
    path: str | Path,
    *,
    params: Iterable[tuple[str, Tensor]] | None = None,
    allow_modified: bool = False,
) -> ModuleMask:
    """Load a module, checking that it belongs to the model whose ``params`` are given.

    With ``params``, the masks come back under the model's names (a module learned on
    ``BertForMaskedLM`` fits the bare encoder of a fine-tuned classifier; see
    :func:`modularevo.modules.naming.match_names`).

    Args:
        path: module file written by :func:`save_module`.
        params: (name, tensor) pairs of the model the module will be used with.
        allow_modified: accept a model with the same architecture but other values
            (a fine-tuned or merged descendant of the base, as in evolution rounds).

    Raises:
        InputError: if names/shapes differ from the module's base, or values differ
            and ``allow_modified`` is false.
    """
    reader = open_module(path)
    module = reader.to_module()
    if params is None:
        return module
    named = dict(params)
    mapping = match_names(module.masks, named)
    wanted = {n: named[p] for n, p in mapping.items()}
    missing = sorted(set(module.masks) - set(wanted))
    if missing:
        raise InputError(
            f"module {str(path)!r} masks {len(missing)} parameter(s) the model lacks, e.g. "
            f"{missing[0]!r}; it was learned on another architecture"
        )
    for n, m in module.masks.items():
        if tuple(wanted[n].shape) != tuple(m.shape):
            raise InputError(
                f"mask {n!r} is {tuple(m.shape)} but the model's parameter is "
                f"{tuple(wanted[n].shape)}; re-run `modularevo modularize` for this model"
            )
    if not allow_modified and module.base_fingerprint:
        got = fingerprint(wanted.items())
        if got != module.base_fingerprint:
            raise InputError(
                f"module {str(path)!r} was learned on a different base model (fingerprint "
                f"{module.base_fingerprint}, this model {got}); use the module's own base, or "
                "pass allow_modified=True for a fine-tuned/merged descendant of it"
            )
    if any(n != p for n, p in mapping.items()):
        module = replace(module, masks={mapping[n]: m for n, m in module.masks.items()})
    return module
