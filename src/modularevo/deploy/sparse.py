"""Unstructured modules: sparse storage (disk ∝ density) and sparse CPU inference.

Storage, format ``modularevo-sparse/1`` (one safetensors file): for each masked
parameter, the bit-packed mask (``<name>::mask``, 1 bit per entry) and only the
kept values (``<name>::values``, in row-major order); every other parameter is
stored densely under its own name. A masked fp32 tensor of density ``d`` costs
``4·d + 1/8`` bytes per entry instead of 4.

Inference: :func:`sparsify_linears` swaps masked ``nn.Linear`` layers for
:class:`SparseLinear`, which multiplies with a ``torch.sparse`` CSR (or BSR)
weight. On CPU PyTorch has no fast unstructured kernel (semi-structured 2:4
sparsity is CUDA-only), so this is usually *slower* than dense below ~95%
sparsity; ``benchmarks/bench_deploy.py`` and ``modularevo cost`` measure it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask, pack_bits, unpack_bits
from modularevo.utils.atomic import atomic_save_file

FORMAT = "modularevo-sparse/1"
LAYOUTS = ("csr", "bsr")


def sparse_state(state: Mapping[str, Tensor], module: ModuleMask) -> dict[str, Tensor]:
    """Pure: split masked tensors into packed masks and kept values."""
    out: dict[str, Tensor] = {}
    for name, t in state.items():
        m = module.masks.get(name)
        if m is None:
            out[name] = t.detach().contiguous()
            continue
        out[f"{name}::mask"] = pack_bits(m)
        out[f"{name}::values"] = t.detach().reshape(-1)[m.reshape(-1)].contiguous()
    return out


def dense_state(sparse: Mapping[str, Tensor], shapes: Mapping[str, list[int]]) -> dict[str, Tensor]:
    """Pure inverse of :func:`sparse_state`: zeros outside the masks."""
    out: dict[str, Tensor] = {}
    for key, t in sparse.items():
        if key.endswith(("::mask", "::values")):
            continue
        out[key] = t
    for name, shape in shapes.items():
        m = unpack_bits(sparse[f"{name}::mask"], tuple(shape)).reshape(-1)
        vals = sparse[f"{name}::values"]
        if int(m.sum()) != vals.numel():
            raise InputError(
                f"sparse file: {name!r} has {vals.numel()} values for {int(m.sum())} kept "
                "entries; the file is corrupted, save it again"
            )
        full = vals.new_zeros(m.numel())
        full[m] = vals
        out[name] = full.reshape(shape)
    return out


def save_sparse(model: nn.Module, module: ModuleMask, path: str | Path) -> Path:
    """Save ``model`` with ``module`` applied, masked tensors stored sparse, atomically.

    Tied parameters are stored once (the state dict's first name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _untied_state(model)
    missing = sorted(set(module.masks) - set(state))
    if missing:
        raise InputError(f"module masks {missing[0]!r}, which the model does not store")
    tensors = sparse_state(state, module)
    meta = {
        "format": FORMAT,
        "shapes": json.dumps({n: list(module.masks[n].shape) for n in module.masks}),
        "density": f"{module.density():.6f}",
    }
    return atomic_save_file(tensors, path, metadata=meta)


def _untied_state(model: nn.Module) -> dict[str, Tensor]:
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for name, t in model.state_dict(keep_vars=False).items():
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def load_sparse(path: str | Path) -> dict[str, Tensor]:
    """Read a sparse file back into a dense state dict (load with ``strict=False``
    when the model has tied parameters stored once).

    Raises:
        InputError: if the file is missing or not a sparse module file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sparse file {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise InputError(
                f"{str(path)!r} is not a sparse module file (format {meta.get('format')!r}, "
                f"expected {FORMAT!r}); write it with save_sparse"
            )
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    return dense_state(tensors, json.loads(meta["shapes"]))


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` held as a ``torch.sparse`` CSR or BSR tensor."""

    def __init__(
        self, weight: Tensor, bias: Tensor | None, *, layout: str = "csr", block: int = 16
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise InputError(f"sparse layout {layout!r} unknown; expected one of {LAYOUTS}")
        self.out_features, self.in_features = weight.shape
        w = weight.detach()
        sw = w.to_sparse_csr() if layout == "csr" else w.to_sparse_bsr((block, block))
        self.register_buffer("sparse_weight", sw)
        self.bias = (
            nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        )
        self.layout = layout

    def forward(self, x: Tensor) -> Tensor:
        """Sparse matmul on the flattened batch: (N, in) -> (N, out)."""
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.sparse_weight, flat.T.contiguous()).T  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        sw: Tensor = self.sparse_weight  # type: ignore[assignment]
        nnz = sw.values().numel()
        return f"{self.in_features}, {self.out_features}, layout={self.layout}, nnz={nnz}"


def sparsify_linears(
    model: nn.Module, module: ModuleMask, *, layout: str = "csr", min_sparsity: float = 0.0
) -> int:
    """Apply ``module`` and swap masked Linear layers for :class:`SparseLinear`, in place.

    Args:
        model: the model (its masked weights are zeroed first).
        module: the unstructured module.
        layout: ``"csr"`` or ``"bsr"`` (16×16 blocks).
        min_sparsity: only layers at least this sparse are swapped.

    Returns:
        The number of layers swapped.
    """
    module.apply_(dict(model.named_parameters()))
    swapped = 0
    for name, sub in list(model.named_modules()):
        m = module.masks.get(f"{name}.weight")
        if not isinstance(sub, nn.Linear) or m is None:
            continue
        if 1.0 - float(m.float().mean()) < min_sparsity:
            continue
        model.set_submodule(name, SparseLinear(sub.weight, sub.bias, layout=layout))
        swapped += 1
    return swapped
