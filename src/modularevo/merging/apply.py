"""The streaming executor: merge a plan tensor by tensor into an HF model folder.

For each output tensor the base and the K input tensors are read (memory-mapped
views, checked for NaN/Inf as they are read), converted to float32, passed to the
method, and the result is cast to the output dtype and queued to a background
writer that streams it into its shard. Pages of the inputs are dropped from memory
once used. Methods that declare themselves elementwise run on flat chunks, so even
the embedding matrix never needs more than a few megabytes of working memory.
``global_stats`` methods (TIES with ``trim_scope: global``) get each model's exact
global threshold from a two-pass histogram pre-pass (:mod:`.thresholds`).

Everything is written into a temporary folder that is renamed at the end, so a
failed or interrupted merge leaves no output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from modularevo.config.merge import MergeConfig, load_merge_config
from modularevo.errors import ConfigError, InputError
from modularevo.io.hf_files import copy_model_files, model_card
from modularevo.io.reader import ModelReader
from modularevo.io.writer import ShardedWriter, TensorSpec
from modularevo.merging.plan import MergePlan, TensorTask, plan_merge
from modularevo.merging.thresholds import CHUNK, keep_counts, kth_largest_bits
from modularevo.utils.atomic import atomic_dir
from modularevo.utils.runinfo import run_info
from modularevo.utils.seed import derived_generator

log = logging.getLogger(__name__)


def check_finite(t: Tensor, name: str, where: str) -> None:
    """Raise if ``t`` holds NaN or Inf (one fast reduction; details only on failure).

    Raises:
        InputError: naming the tensor, the model and how many bad values it holds.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return
    if torch.isfinite(t.sum(dtype=torch.float32)):
        return
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    if n_nan == 0 and n_inf == 0:  # the sum overflowed; values are finite
        return
    raise InputError(
        f"tensor {name!r} of {where} holds {n_nan} NaN and {n_inf} Inf value(s); expected "
        "finite weights. The checkpoint is broken: re-save or re-train it, or leave it out."
    )


class _Inputs:
    """Reads of one tensor name across the base and the input models."""

    def __init__(self, plan: MergePlan, task: TensorTask) -> None:
        self.plan = plan
        self.task = task
        cfg = plan.config
        self.check = cfg.check_finite
        k = len(plan.models)
        if plan.base is not None:
            self.idx = list(range(k))
        else:
            self.idx = [i for i in range(k) if task.present[i]]
        self.base = self._read(plan.base, cfg.base_model or "") if plan.base else None
        self.models = [
            self._read(plan.models[i], plan.entries[i].model) if task.present[i] else self.base
            for i in self.idx
        ]

    def _read(self, reader: ModelReader, label: str) -> Tensor:
        return reader.read(self.task.name)

    def labels(self) -> list[str]:
        cfg = self.plan.config
        base = [cfg.base_model or ""] if self.base is not None else []
        return base + [self.plan.entries[i].model for i in self.idx]

    def all(self) -> list[Tensor | None]:
        return ([self.base] if self.base is not None else []) + list(self.models)

    def release(self) -> None:
        for r in [self.plan.base, *self.plan.models]:
            if r is not None and self.task.name in r:
                r.release(self.task.name)


def _call(plan: MergePlan, inputs: list[Tensor], base: Tensor | None, extra: dict[str, Any]):
    return plan.method.fn(inputs, base, **extra)


def merge_tensor(plan: MergePlan, task: TensorTask, thresholds: list[float] | None) -> Tensor:
    """Merge one tensor of the plan; returns it in the task's output dtype."""
    ins = _Inputs(plan, task)
    try:
        params = plan.params_for(task.name, ins.idx)
        extra: dict[str, Any] = dict(params)
        method = plan.method
        extra["generators"] = (
            [derived_generator(plan.config.seed, task.name, i) for i in ins.idx]
            if method.randomized
            else None
        )
        extra["masks"] = (
            [plan.masks[i].mask(task.name) if plan.masks[i] else None for i in ins.idx]
            if method.uses_masks
            else None
        )
        extra["thresholds"] = [thresholds[i] for i in ins.idx] if thresholds else None
        if plan.elementwise(params) and task.numel > CHUNK:
            return _merge_chunked(plan, task, ins, extra)
        if ins.check:
            for t, label in zip(ins.all(), ins.labels(), strict=False):
                if t is not None:
                    check_finite(t, task.name, label)
        base32 = ins.base.float() if ins.base is not None else None
        out = _call(plan, [t.float() for t in ins.models if t is not None], base32, extra)
        _check_result(out, task)
        return out.to(task.out_dtype)
    finally:
        ins.release()


def _merge_chunked(
    plan: MergePlan, task: TensorTask, ins: _Inputs, extra: dict[str, Any]
) -> Tensor:
    out = torch.empty(task.shape, dtype=task.out_dtype)
    flat_out = out.view(-1)
    flats = [t.reshape(-1) if t is not None else None for t in ins.all()]
    masks = extra.get("masks")
    labels = ins.labels()
    has_base = ins.base is not None
    for a in range(0, task.numel, CHUNK):
        b = min(a + CHUNK, task.numel)
        parts = [f[a:b].float() if f is not None else None for f in flats]
        if ins.check:
            for p, label in zip(parts, labels, strict=False):
                if p is not None:
                    check_finite(p, task.name, label)
        if masks is not None:
            extra["masks"] = [m.reshape(-1)[a:b] if m is not None else None for m in masks]
        base = parts[0] if has_base else None
        models = [p for p in (parts[1:] if has_base else parts) if p is not None]
        flat_out[a:b] = _call(plan, models, base, extra)
    return out


def _check_result(out: Tensor, task: TensorTask) -> None:
    if tuple(out.shape) != task.shape:
        raise RuntimeError(
            f"merge method returned shape {list(out.shape)} for {task.name!r} "
            f"(expected {list(task.shape)}); this is a bug in the method"
        )


def _abs_delta_stream(plan: MergePlan) -> Iterator[tuple[int, Tensor]]:
    base = plan.base
    assert base is not None
    for task in plan.merge_tasks():
        b = base.read(task.name).reshape(-1)
        for i, model in enumerate(plan.models):
            m = model.read(task.name).reshape(-1) if task.present[i] else b
            for a in range(0, task.numel, CHUNK):
                part = m[a : a + CHUNK].float()
                if plan.config.check_finite:
                    check_finite(part, task.name, plan.entries[i].model)
                yield i, (part - b[a : a + CHUNK].float()).abs_()
            if task.present[i]:
                model.release(task.name)
        base.release(task.name)


def global_thresholds(plan: MergePlan) -> list[float]:
    """Each model's exact global |τ| threshold for its density (two streaming passes).

    Raises:
        ConfigError: if the method has no base model to take task vectors against.
    """
    if plan.base is None:
        raise ConfigError(["global trimming needs a base_model"])
    densities = plan.threshold_densities()
    total = sum(t.numel for t in plan.merge_tasks())
    k = keep_counts(densities, [total] * len(plan.models))
    thr = kth_largest_bits(lambda: _abs_delta_stream(plan), k, len(plan.models))
    log.info("global |τ| thresholds: %s", ", ".join(f"{t:.3g}" for t in thr))
    return thr


def execute(
    plan: MergePlan, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run ``plan`` and write the merged model to ``out`` atomically.

    Raises:
        InputError: NaN/Inf in an input, or ``out`` exists without ``overwrite``.
    """
    out = Path(out)
    _check_out(plan, out)
    start = time.perf_counter()
    thresholds = global_thresholds(plan) if plan.needs_thresholds() else None
    specs = [TensorSpec(t.name, t.out_dtype, t.shape) for t in plan.tasks]
    meta = {"modularevo_method": plan.method.name}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        with ShardedWriter(tmp, specs, shard_bytes=plan.config.shard_bytes, metadata=meta) as w:
            _stream(plan, w, thresholds, progress)
        _write_side_files(plan, tmp)
    log.info(
        "merged %d tensors into %s in %.1f s", len(plan.tasks), out, time.perf_counter() - start
    )
    return out


def _stream(
    plan: MergePlan, w: ShardedWriter, thresholds: list[float] | None, progress: bool
) -> None:
    held: dict[str, Tensor] = {}
    aliased = {t.alias_of for t in plan.tasks if t.action == "alias"}
    total = sum(t.numel for t in plan.tasks)
    with tqdm(total=total, unit="param", unit_scale=True, disable=not progress,
              desc=f"merge ({plan.method.name})") as bar:  # fmt: skip
        for task in plan.tasks:
            if task.action == "merge":
                t = merge_tensor(plan, task, thresholds)
                if task.name in aliased:
                    held[task.name] = t
            elif task.action == "alias":
                t = held[task.alias_of or ""].to(task.out_dtype)
            else:
                t = plan.reference.read(task.name)
            w.write(task.name, t)
            bar.update(task.numel)
            del t


def _write_side_files(plan: MergePlan, tmp: Path) -> None:
    cfg = plan.config
    copy_model_files(plan.source_dir, tmp, torch_dtype=cfg.output_dtype)
    resolved = cfg.model_dump(mode="json")
    card = model_card(
        recipe=plan.recipe,
        resolved=resolved,
        method=plan.method.name,
        paper=plan.method.paper,
        run=run_info(cfg.seed),
    )
    (tmp / "README.md").write_text(card, encoding="utf-8")
    (tmp / "merge_config.yaml").write_text(yaml.safe_dump(plan.recipe, sort_keys=False))


def _check_out(plan: MergePlan, out: Path) -> None:
    target = out.resolve()
    for r in [plan.reference, *plan.models]:
        for f in r.files:
            if target == f.resolve().parent or target in f.resolve().parents:
                raise ConfigError(
                    [f"output {str(out)!r} would overwrite the input {str(r.path)!r}; "
                     "write the merge to a new folder"]
                )  # fmt: skip


def make_plan(
    config: str | Path | dict[str, Any] | MergeConfig,
    *,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> MergePlan:
    """Load and check a recipe and plan the merge; no weight is read.

    Args:
        config: a YAML path, a dict or a :class:`MergeConfig`.
        overrides: dotted ``key=value`` overrides.
        seed: overrides the recipe's ``seed``.

    Raises:
        ConfigError: invalid recipe (every problem listed).
        InputError: unreadable or mismatched input models.
    """
    extra = [f"seed={seed}"] if seed is not None else []
    cfg, recipe = load_merge_config(config, [*(overrides or []), *extra])
    return plan_merge(cfg, recipe)


def merge(
    config: str | Path | dict[str, Any] | MergeConfig,
    out: str | Path,
    *,
    overrides: list[str] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Merge the models of a recipe into the HF model folder ``out``.

    Example:
        >>> merge("recipe.yaml", "merged", overrides=["parameters.lambda=0.5"])  # doctest: +SKIP

    Args:
        config: a YAML path (mergekit recipes work), a dict or a :class:`MergeConfig`.
        out: output folder; written atomically.
        overrides: dotted ``key=value`` overrides of the recipe.
        seed: overrides the recipe's ``seed``.
        overwrite: replace ``out`` if it exists.
        progress: show a progress bar.

    Returns:
        The output folder.

    Raises:
        ConfigError: invalid recipe. InputError: bad inputs (checked before writing).
    """
    plan = make_plan(config, overrides=overrides, seed=seed)
    try:
        return execute(plan, out, overwrite=overwrite, progress=progress)
    finally:
        plan.close()
