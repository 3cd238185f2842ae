"""Internal pieces of the modularizer: scores, head selection, module building, checkpoints."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.modules.layers import MaskScores, maskable_params
from modularevo.modules.mask import ModuleMask, fingerprint
from modularevo.modules.structured import StructuredScores
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.utils.atomic import atomic_save_file

log = logging.getLogger(__name__)


def build_scores(
    model: nn.Module, arch: Any, config: ModularizeConfig, generator: torch.Generator
) -> nn.Module:
    """Unstructured :class:`MaskScores` or :class:`StructuredScores`, per the config.

    Raises:
        InputError: if the model has nothing to mask.
    """
    params = dict(model.named_parameters())
    init = (config.init_low, config.init_high)
    if config.structured:
        scores: nn.Module = StructuredScores(arch, params, init_range=init, generator=generator)
    else:
        names = maskable_params(model, arch.maskable, bias=config.mask_bias)
        scores = MaskScores(
            {n: params[n].shape for n in names}, init_range=init, generator=generator
        )
    if not scores.names():  # type: ignore[operator]
        raise InputError(
            f"model {config.model!r} has no maskable layers (family {arch.family!r}); "
            "check `describe(model)` or use another model"
        )
    return scores


def head_parameter_names(model: nn.Module, arch: Any, train_head: bool | None) -> list[str]:
    """Names of the LM-head parameters to train with the masks (never tied ones).

    ``train_head=None`` trains exactly the head weights the checkpoint lacked (a fresh
    MLM head for MiniLM). ``True`` trains every untied head parameter; ``False`` none.
    A head weight tied to the input embeddings is never trained: that would move the
    "frozen" embeddings (METHODS.md §6, pitfall 17).
    """
    if train_head is False:
        return []
    groups: dict[tuple[int, int], list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault((p.data_ptr(), p.numel()), []).append(n)
    # a tie inside the head (output bias <-> decoder bias) is fine; a tie to the body is not
    free = {g[0] for g in groups.values() if all(arch.is_head(a) for a in g) or len(g) == 1}
    names = [n for n, _ in model.named_parameters() if n in free]
    if train_head is None:
        fresh = set(getattr(model, "modularevo_fresh_keys", ()) or ())
        return [n for n in names if n in fresh]
    return [n for n in names if arch.is_head(n)]


def build_module(
    masks: Mapping[str, Tensor], model: nn.Module, *, domain: str, metadata: Mapping[str, Any]
) -> ModuleMask:
    """A :class:`ModuleMask` with fingerprints of the masked base parameters."""
    params = dict(model.named_parameters())
    covered = [(n, params[n]) for n in masks]
    return ModuleMask(
        masks=dict(masks),
        domain=domain,
        arch_fingerprint=fingerprint(covered, values=False),
        base_fingerprint=fingerprint(covered),
        metadata=dict(metadata),
    )


def save_head(model: nn.Module, names: Iterable[str], path: Path) -> Path | None:
    """Write the named (head) parameters to a safetensors file; None when there are none."""
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().cpu().contiguous() for n in names}
    if not tensors:
        return None
    return atomic_save_file(tensors, path, metadata={"format": "modularevo-head/1"})


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file, then rename (a kill never leaves half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def level_tag(level: float) -> str:
    """File-name tag of a snapshot level: 0.25 -> ``"0.25"``."""
    return f"{level:.2f}".rstrip("0").rstrip(".") if level < 1 else "1"
