"""The :class:`ModuleMask` value type: parameter name -> bool mask, plus bit packing.

A module of a pretrained model is ``θ0 ⊙ M`` for a binary mask ``M`` over some of
its parameters. Parameters without an entry are not part of the module's mask
(e.g. embeddings, LayerNorms, heads): the mask says nothing about them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a bool tensor into uint8, 8 entries per byte, little bit order, row-major.

    Returns:
        A 1-D uint8 tensor of ``ceil(numel / 8)`` bytes.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8)  # (numel/8,)


def unpack_bits(packed: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape``.

    Raises:
        InputError: if ``packed`` has the wrong number of bytes for ``shape``.
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    if packed.numel() != (numel + 7) // 8:
        raise InputError(
            f"packed mask has {packed.numel()} bytes but shape {tuple(shape)} needs "
            f"{(numel + 7) // 8}; the module file is corrupted, rebuild it"
        )
    bits = (packed.reshape(-1, 1) & _BIT_WEIGHTS) != 0  # (bytes, 8)
    return bits.reshape(-1)[:numel].reshape(tuple(shape))


def fingerprint(tensors: Iterable[tuple[str, Tensor]], *, values: bool = True) -> str:
    """A short hash of tensor names, shapes and (optionally) a sample of their values.

    With ``values=False`` it identifies the architecture only; with ``values=True``
    it also tells a model from a fine-tuned copy. Sampling keeps it cheap: 64
    evenly spaced entries per tensor.
    """
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(tensors, key=lambda kv: kv[0]):
        h.update(f"{name}:{tuple(t.shape)};".encode())
        if values and t.numel():
            flat = t.detach().reshape(-1)
            idx = torch.linspace(0, flat.numel() - 1, steps=min(64, flat.numel())).long()
            h.update(flat[idx].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ModuleMask:
    """A binary mask per parameter, with the identity of the model it belongs to.

    Attributes:
        masks: parameter name -> bool tensor of the parameter's shape.
        domain: the domain the module was learned on (e.g. "math").
        arch_fingerprint: :func:`fingerprint` of the masked parameters' names and shapes.
        base_fingerprint: :func:`fingerprint` including values of the base parameters.
        metadata: free-form JSON-able facts (config, kept fraction at snapshot, ...).
    """

    masks: Mapping[str, Tensor]
    domain: str = ""
    arch_fingerprint: str = ""
    base_fingerprint: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, m in self.masks.items():
            if m.dtype != torch.bool:
                raise InputError(f"mask {name!r} has dtype {m.dtype}; masks must be bool")

    @property
    def numel(self) -> int:
        """Number of mask entries (weights covered by the mask)."""
        return sum(m.numel() for m in self.masks.values())

    @property
    def kept(self) -> int:
        """Number of entries inside the module."""
        return sum(int(m.sum()) for m in self.masks.values())

    def density(self) -> float:
        """Kept fraction over all mask entries."""
        return self.kept / max(self.numel, 1)

    def density_per_param(self) -> dict[str, float]:
        """Kept fraction of each masked parameter."""
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def overlap(self, other: ModuleMask) -> dict[str, float]:
        """Jaccard index and the shared fraction of all entries with ``other``.

        Raises:
            InputError: if the two masks cover different parameters or shapes.
        """
        self._check_compatible(other)
        inter = sum(int((m & other.masks[n]).sum()) for n, m in self.masks.items())
        union = sum(int((m | other.masks[n]).sum()) for n, m in self.masks.items())
        return {
            "jaccard": inter / union if union else 1.0,
            "shared_of_all": inter / max(self.numel, 1),
            "shared_of_self": inter / max(self.kept, 1),
            "shared_of_other": inter / max(other.kept, 1),
        }

    def apply_(self, params: Mapping[str, Tensor]) -> None:
        """Zero, in place, every entry of ``params`` outside the mask."""
        for name, m in self.masks.items():
            if name in params:
                params[name].data.mul_(m.to(params[name].device, params[name].dtype))

    def _check_compatible(self, other: ModuleMask) -> None:
        if set(self.masks) != set(other.masks):
            diff = sorted(set(self.masks) ^ set(other.masks))[:3]
            raise InputError(f"modules cover different parameters (e.g. {diff}); same base?")
        for n, m in self.masks.items():
            if m.shape != other.masks[n].shape:
                raise InputError(
                    f"mask {n!r} is {tuple(m.shape)} in one module and "
                    f"{tuple(other.masks[n].shape)} in the other; same base model?"
                )
