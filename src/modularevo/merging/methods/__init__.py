"""Registered merge methods; importing this package fills ``MERGE_METHODS``.

Each module registers its methods with
:func:`~modularevo.merging.spec.register_method`; see :mod:`modularevo.merging.spec`
for the contract between these pure tensor functions and the executor.
"""

from modularevo.merging.methods import (
    arcee_fusion,
    cabs,
    cart,
    linear,
    magmax,
    model_stock,
    modularevo,
    nearswap,
    opcm,
    passthrough,
    pcb,
    ram,
    sce,
    slerp,
    spectral,
    spherical,
    task_arithmetic,
)

__all__ = [
    "arcee_fusion",
    "cabs",
    "cart",
    "linear",
    "magmax",
    "model_stock",
    "modularevo",
    "nearswap",
    "opcm",
    "passthrough",
    "pcb",
    "ram",
    "sce",
    "slerp",
    "spectral",
    "spherical",
    "task_arithmetic",
]
