"""Files of a fine-tuning run: resolved config, metrics, resume guard, mask check."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.utils.atomic import atomic_write_text, claim_output
from modularevo.utils.runinfo import run_info


def bits_differ(a: Tensor, b: Tensor) -> Tensor:
    """Flat bool tensor: True where ``a`` and ``b`` differ in any bit (same dtype and shape)."""
    width = a.element_size()
    a_bytes = a.contiguous().view(-1).view(torch.uint8).view(-1, width)  # (numel, width)
    b_bytes = b.contiguous().view(-1).view(torch.uint8).view(-1, width)
    return (a_bytes != b_bytes).any(dim=1)


def mask_report(
    model: nn.Module, masks: dict[str, Tensor], base: dict[str, Tensor]
) -> dict[str, Any]:
    """Mask density and the count of out-of-mask entries of ``model`` that differ from ``base``."""
    params = dict(model.named_parameters())
    changed = inside = total = 0
    for name, mask in masks.items():
        diff = bits_differ(params[name].detach().cpu(), base[name].cpu())
        changed += int(diff[~mask.view(-1)].sum())
        inside += int(mask.sum())
        total += mask.numel()
    return {
        "mask": {
            "density": inside / max(total, 1),
            "out_of_mask_changed": changed,
            "masked_params": len(masks),
        }
    }


NOT_TRAINING_KEYS = {"progress", "overwrite", "resume", "output_dir", "keep_checkpoints", "tracker"}


def check_resumable(cfg: FinetuneConfig, ckpt_root: Path, is_main: bool) -> None:
    """Refuse to resume checkpoints written under a config that trains differently."""
    saved = ckpt_root / "config.json"
    current = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_TRAINING_KEYS}
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
        if changed:
            raise InputError(
                f"checkpoints in {str(ckpt_root)!r} come from a run with other settings "
                f"({', '.join(changed)} differ); set resume=false to start over, or restore them"
            )
    elif is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(current, indent=1))


def write_run_files(out: Path, cfg: FinetuneConfig, metrics: dict[str, Any]) -> None:
    """Write the resolved config, run info and metrics (atomically, metrics last)."""
    atomic_write_text(
        out / "config.resolved.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    atomic_write_text(out / "run_info.json", json.dumps(run_info(), indent=2, default=str))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))


RUN_FILES = ("metrics.json", "config.resolved.yaml", "run_info.json", "README.md", "model")
"""What a finished run holds besides its checkpoints (``metrics.json`` marks it finished)."""

F = TypeVar("F", bound=Callable[..., Any])


def clear_run_files(out: Path) -> None:
    """Delete a finished run's results, ``metrics.json`` first (``overwrite: true``)."""
    for name in RUN_FILES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_inputs(cfg: FinetuneConfig, *, dataset: bool = True, model: bool = True) -> None:
    """Check the names and files a run needs, before anything is loaded (``--dry-run``).

    A run checks the module file up front and the names as it loads them (the dataset
    before the model, so a misspelt name never waits for weights).

    Raises:
        InputError: misspelt dataset or model name (did-you-mean), missing module file
            (with the `modularize` command that makes it).
    """
    if dataset:
        # deferred: datasets is a heavy import, not needed when the data comes in memory
        from modularevo.data import check_dataset_name

        check_dataset_name(cfg.task)
    if model:
        # deferred: transformers is a heavy import, not needed when the model comes in memory
        from modularevo.models.load import resolve_model

        resolve_model(cfg.model)
    if cfg.module and not Path(cfg.module).is_file():
        raise InputError(missing_module_message(cfg.module))


def missing_module_message(module: str) -> str:
    """What to do about a module file that does not exist (names the modularize config)."""
    path = Path(module)
    made_by = _modularize_config_for(path)
    run = (
        f"`modularevo modularize {made_by}`"
        if made_by
        else "`modularevo modularize configs/modularize/<name>.yaml` with output_dir set to "
        f"{str(path.parent)!r}"
    )
    near = sorted(p.name for p in path.parent.glob("module*.safetensors"))[:5]
    found = f" (that folder holds {near})" if near else ""
    return (
        f"module file {module!r} does not exist{found}; learn the module first with {run}, then "
        "run this again, or pass module=<an existing module file>, or use strategy=full"
    )


def _modularize_config_for(path: Path) -> str | None:
    """The shipped ``configs/modularize/*.yaml`` whose output_dir holds ``path``, if any."""
    import yaml

    for cfg in sorted(Path("configs/modularize").glob("*.yaml")):
        try:
            out = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("output_dir")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if out and Path(str(out)) == path.parent:
            return str(cfg)
    return None


def claims_output_dir(fn: F) -> F:
    """Decorate ``fn(config, ...)``: check its inputs, then hold ``config.output_dir``.

    The module file is checked first (:func:`check_inputs`), so a missing one is named
    with the command that makes it before any model is loaded. Only the main process
    (``RANK`` 0 or unset) takes the lock; a second run into the same folder is refused
    with an :class:`InputError`.
    """

    @functools.wraps(fn)
    def run(config: Any, *args: Any, **kwargs: Any) -> Any:
        check_inputs(config, dataset=False, model=False)
        main = os.environ.get("RANK", "0") == "0"
        with claim_output(Path(config.output_dir), enabled=main):
            return fn(config, *args, **kwargs)

    return run  # type: ignore[return-value]


def dataset_columns(cfg: FinetuneConfig) -> dict[str, Any]:
    """The ``text_column``/``label_column``/``label_names`` a config sets, for load_dataset."""
    keys = ("text_column", "label_column", "label_names")
    return {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
