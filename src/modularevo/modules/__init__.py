"""Modules: binary weight masks over a pretrained model, their files and their algebra."""

from modularevo.modules.io import ModuleReader, load_module, open_module, save_module
from modularevo.modules.mask import ModuleMask, fingerprint, pack_bits, unpack_bits

__all__ = [
    "ModuleMask",
    "ModuleReader",
    "fingerprint",
    "load_module",
    "open_module",
    "pack_bits",
    "save_module",
    "unpack_bits",
]
