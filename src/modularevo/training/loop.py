"""Written-out training-loop helpers on Hugging Face Accelerate (no trainer classes).

One CPU process, DDP or FSDP under ``accelerate launch`` run the same code:

* :func:`global_batches` / :func:`local_part`: a seeded data
  order that depends only on ``(seed, epoch)``. ``batch_size`` is the global batch; each
  process takes its contiguous share, so N processes see the same examples per step as one.
* :func:`train_step`: forward, backward, optional gradient hook (masking), clipping,
  optimizer and scheduler step.
* :func:`save_checkpoint` / :func:`load_checkpoint`: model + optimizer + scheduler + RNG of
  every process + :class:`TrainState`, written to a temporary folder and renamed, so a
  killed run resumes from its last complete checkpoint. Nothing in a checkpoint can run
  code when it is loaded: model weights are safetensors, Accelerate's optimizer and RNG
  files are read with ``torch.load(weights_only=True)``, and the scheduler and every
  RNG state are also written as JSON + safetensors (:mod:`.checkpoint_state`); no
  object is registered with Accelerate's ``register_for_checkpointing``, whose files are
  unpickled with ``weights_only=False``.

Example:
    >>> acc = Accelerator(cpu=True)                                 # doctest: +SKIP
    >>> for idx in global_batches(len(train), 16, seed=0, epoch=0):  # doctest: +SKIP
    ...     loss = train_step(acc, model, collate(local_part(idx, acc)), opt)
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from modularevo.errors import InputError
from modularevo.io.checkpoint import (
    load_rng_state,
    load_scheduler_state,
    refuse_unsafe,
    save_rng_state,
    save_scheduler_state,
)
from modularevo.utils.atomic import apply_umask
from modularevo.utils.seed import derived_generator

logger = logging.getLogger(__name__)

_STATE_FILE = "train_state.json"
_PREFIX = "step-"


@dataclass
class TrainState:
    """Counters a resumed run needs besides model/optimizer/scheduler/RNG."""

    step: int = 0
    best_metric: float = float("-inf")
    best_step: int = -1
    evals_since_best: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def global_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled global batches of one epoch; the last partial batch is dropped.

    The order depends only on ``(seed, epoch)``, so a resumed run continues it exactly.

    Raises:
        InputError: if there are fewer than ``batch_size`` examples.
    """
    if n < batch_size:
        raise InputError(
            f"the train split has {n} examples, fewer than one batch of {batch_size}; "
            "lower batch_size or use more data"
        )
    order = torch.randperm(n, generator=derived_generator(seed, "epoch", epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def local_part(indices: Sequence[int], accelerator: Accelerator) -> list[int]:
    """This process's contiguous share of a global batch.

    Raises:
        InputError: if the batch does not split evenly over the processes.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    if len(indices) % world:
        raise InputError(
            f"global batch of {len(indices)} does not split over {world} processes; "
            f"use a batch_size divisible by {world}"
        )
    share = len(indices) // world
    return list(indices[rank * share : (rank + 1) * share])


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    max_grad_norm: float | None = None,
    grad_hook: Callable[[], None] | None = None,
) -> float:
    """One optimisation step on this process's part of the global batch.

    Args:
        accelerator: the run's accelerator (model/optimizer already prepared).
        model: a model whose forward takes ``**batch`` and returns ``.loss``.
        batch: tensors on any device; moved to ``accelerator.device``.
        optimizer: the prepared optimizer.
        scheduler: a learning-rate scheduler stepped once per call.
        max_grad_norm: clip the global gradient norm to this (after ``grad_hook``).
        grad_hook: called after backward, before clipping (e.g. to mask gradients,
            so that clipping sees the masked norm).

    Returns:
        The loss averaged over processes.
    """
    model.train()
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    loss = model(**batch).loss
    accelerator.backward(loss)
    if grad_hook is not None:
        grad_hook()
    if max_grad_norm is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    reduced: Any = accelerator.reduce(loss.detach(), reduction="mean")
    return float(reduced)


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def save_checkpoint(
    accelerator: Accelerator,
    root: str | Path,
    state: TrainState,
    *,
    keep: int = 1,
    extra_files: Sequence[Path] = (),
    scheduler: Any = None,
) -> Path:
    """Save model, optimizer, ``scheduler`` (JSON), RNG and ``state`` atomically.

    Every process writes its part into ``root/.tmp-step-N``; the main process then
    copies ``extra_files`` in (e.g. the best weights so far), renames the folder to
    ``root/step-N`` and deletes all but the newest ``keep`` checkpoints. A run killed
    in between leaves only the temporary folder, which is ignored.

    Returns:
        The checkpoint folder.
    """
    root = Path(root)
    final = root / f"{_PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        for stale in root.glob(f".tmp-{_PREFIX}*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        apply_umask(tmp, folder=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    save_rng_state(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if scheduler is not None:
            save_scheduler_state(tmp, scheduler)
        (tmp / _STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
        for extra in extra_files:
            if Path(extra).is_file():
                shutil.copy2(extra, tmp / Path(extra).name)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    logger.info("checkpoint saved: %s", final)
    return final


def load_checkpoint(
    accelerator: Accelerator, root: str | Path, *, scheduler: Any = None
) -> tuple[TrainState, Path] | None:
    """Restore the newest complete checkpoint under ``root`` without running code from it.

    Returns:
        (the saved :class:`TrainState`, the checkpoint folder), or ``None`` when there is none.

    Raises:
        InputError: a checkpoint file holds pickled code or is incomplete or unreadable.
    """
    found = checkpoint_dirs(root)
    if not found:
        return None
    latest = found[-1]
    refuse_unsafe(latest)
    try:
        accelerator.load_state(str(latest))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, ValueError) as exc:
        raise InputError(
            f"checkpoint {str(latest)!r} cannot be read safely ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else '-'}); nothing from it was run. Delete "
            "the folder or set resume=false to start over"
        ) from None
    load_rng_state(latest, accelerator.process_index)
    if scheduler is not None:
        load_scheduler_state(latest, scheduler)
    data = json.loads((latest / _STATE_FILE).read_text(encoding="utf-8"))
    logger.info("resumed from %s (step %d)", latest, data["step"])
    return TrainState(**data), latest
