"""The process's compute device: one :class:`~accelerate.Accelerator` per run.

``accelerate launch`` sets the environment this reads, so one CPU process, DDP and FSDP
run the same training and evaluation code.
"""

from __future__ import annotations

from accelerate import Accelerator


def build_accelerator(*, cpu: bool = False, mixed_precision: str = "no") -> Accelerator:
    """An :class:`~accelerate.Accelerator` for this process (reads ``accelerate launch`` env)."""
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
