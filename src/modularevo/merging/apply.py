"""The streaming executor: merge a plan tensor by tensor into an HF model folder.

For each output tensor the base and the K input tensors are read with positioned
reads into fresh buffers (by reader threads, ahead of the computation, and checked
for NaN/Inf as they are read), passed to the method in float32, and the result is
cast to the output dtype and queued to a background writer that streams it into
its shard (:mod:`.stream`). No file is memory-mapped, so the process's memory is
the tensors in flight, not the models. Elementwise methods and per-tensor TIES run
on flat chunks, so their temporaries stay small even for the embedding matrix.
``global_stats`` methods (TIES with ``trim_scope: global``) get each model's exact
global threshold from a two-pass histogram pre-pass (:mod:`.thresholds`).

Everything is written into a temporary folder that is renamed at the end, so a
failed or interrupted merge leaves no output.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from modularevo.errors import ConfigError, InputError
from modularevo.io.hf_files import TOKENIZER_FILES, copy_model_files, model_card
from modularevo.io.reader import model_dir
from modularevo.io.writer import ShardedWriter, TensorSpec
from modularevo.merging.output_files import write_config_updates
from modularevo.merging.plan import plan_merge
from modularevo.merging.plan_types import MergePlan
from modularevo.merging.recipe import MergeConfig, load_merge_config
from modularevo.merging.stream import CHUNK, Prefetcher, check_finite, merge_tensor
from modularevo.merging.thresholds import keep_counts, kth_largest_bits
from modularevo.utils.atomic import atomic_dir, check_output_path
from modularevo.utils.heap import reuse_freed_memory
from modularevo.utils.lazy import LazyModule
from modularevo.utils.progress import bar_disable
from modularevo.utils.runinfo import run_info

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

log = logging.getLogger(__name__)

READ_THREADS = 2
"""Reader threads (positioned reads and NaN checks release the GIL)."""

__all__ = ["CHUNK", "check_finite", "execute", "global_thresholds", "make_plan", "merge"]


def _abs_delta_stream(plan: MergePlan) -> Iterator[tuple[int, Tensor]]:
    """(model index, |τ| chunk) over every merged tensor; one base tensor held at a time."""
    base = plan.base
    assert base is not None
    for task in plan.merge_tasks():
        b = base.read(task.name).reshape(-1)
        for i, model in enumerate(plan.models):
            for a in range(0, task.numel, CHUNK):
                bpart = b[a : a + CHUNK].float()
                if not task.present[i]:
                    yield i, torch.zeros_like(bpart)
                    continue
                part = model.read_flat(task.name, a, a + CHUNK).float()
                if plan.config.check_finite:
                    check_finite(part, task.name, plan.entries[i].model)
                yield i, part.sub_(bpart).abs_()


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
    check_output_path(out, overwrite=overwrite)
    _check_sources(plan)
    start = time.perf_counter()
    thresholds = global_thresholds(plan) if plan.needs_thresholds() else None
    specs = [TensorSpec(t.name, t.out_code, t.shape) for t in plan.tasks]
    meta = {"modularevo_method": plan.method.name}
    with ThreadPoolExecutor(1) as side, atomic_dir(out, overwrite=overwrite) as tmp, \
            reuse_freed_memory():  # fmt: skip
        info = side.submit(run_info, plan.config.seed)  # git + versions, meanwhile
        watch = _BaseWatch(plan)
        with ShardedWriter(tmp, specs, shard_bytes=plan.config.shard_bytes, metadata=meta) as w:
            _stream(plan, w, thresholds, progress, watch)
        watch.check()  # before publishing: an unchanged base is never written as a merge
        _write_side_files(plan, tmp, info.result())
    log.info(
        "merged %d tensors into %s in %.1f s", len(plan.tasks), out, time.perf_counter() - start
    )
    return out


def _stream(
    plan: MergePlan,
    w: ShardedWriter,
    thresholds: list[float] | None,
    progress: bool,
    watch: _BaseWatch | None = None,
) -> None:
    held: dict[str, Any] = {}
    aliased = {t.alias_of for t in plan.tasks if t.action == "alias"}
    total = sum(t.numel for t in plan.tasks)
    reads = Prefetcher(plan, plan.tasks, threads=READ_THREADS)
    with (
        plan.backend.compute_threads(_chunked(plan)) as pool,
        _progress_bar(total, f"merge ({plan.method.name})", progress) as bar,
    ):
        try:
            for task, inputs in reads:
                if task.action == "merge":
                    t = merge_tensor(plan, task, inputs, thresholds, pool)  # checks NaN/Inf
                    if task.name in aliased:
                        held[task.name] = t
                    if watch is not None:
                        watch.see(task, inputs, t)
                elif task.action == "alias":
                    t = held[task.alias_of or ""]  # tied tensors share shape and dtype
                else:
                    t = inputs[0][0]
                    assert t is not None
                del inputs
                w.write(task.name, t)
                bar.update(task.numel)
                del t
        finally:
            reads.close()


class _BaseWatch:
    """Notice a merge whose every merged tensor equals the base's (the merge did nothing).

    Tensors are compared until the first one differs, so a working merge pays one
    comparison per tensor at most until then (usually the first).
    """

    def __init__(self, plan: MergePlan) -> None:
        self.plan = plan
        self.seen = 0
        self.changed = plan.base is None  # without a base there is nothing to compare

    def see(self, task: Any, inputs: Any, merged: Any) -> None:
        """Compare one merged tensor with the base tensor it replaces."""
        if self.changed:
            return
        self.seen += 1
        cast = self.plan.backend.cast
        if tuple(inputs[0][0].shape) != tuple(merged.shape):  # rows re-indexed (tokenizer)
            self.changed = True
            return
        flat_base, flat_merged = inputs[0][0].reshape(-1), merged.reshape(-1)
        # chunk by chunk: a whole-tensor cast and comparison of the first (often the
        # largest, the embedding) tensor cost 1.4 GB above the floor at 1.4B parameters
        for a in range(0, task.numel, CHUNK):
            base = cast(flat_base[a : a + CHUNK], task.out_code)
            part = flat_merged[a : a + CHUNK]
            if isinstance(part, np.ndarray):  # the numpy backend: torch stays unimported
                same = bool(np.array_equal(base, part))
            else:
                same = torch.equal(base, part)
            if not same:
                self.changed = True
                return

    def check(self) -> None:
        """Raise when the merge wrote the base back, unless every weight asked for that.

        Raises:
            InputError: every merged tensor equals the base's and some weight is not 0.
        """
        if self.changed or self.seen == 0:
            return
        names = [e.model for e in self.plan.entries]
        if self._all_weights_zero():
            log.warning(
                "every model has weight 0, so the merge wrote the base back unchanged (%d tensors)",
                self.seen,
            )
            return
        raise InputError(
            f"the merge would write the base model back unchanged: all {self.seen} merged "
            f"tensors equal the base's, so the input models ({', '.join(map(str, names))}) "
            "add nothing (are they copies of the base, or fine-tunes that did not move, "
            "or are their changes all outside the masks?). Nothing was written. Check that "
            "the fine-tunes trained and that `base_model` is the model they were fine-tuned "
            "from; to write the base on purpose, give every model `weight: 0`."
        )

    def _all_weights_zero(self) -> bool:
        if not any(p.name == "weight" for p in self.plan.method.params):
            return False
        try:
            weights = self.plan.params_for(None).get("weight")
        except Exception:
            return False
        return isinstance(weights, (list, tuple)) and all(w == 0 for w in weights)


def _progress_bar(total: int, desc: str, show: bool) -> Any:
    """A tqdm bar over parameters; tqdm (with its asyncio import) is loaded only to show one."""
    if not show:
        return contextlib.nullcontext(_NoBar())
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="param", unit_scale=True, desc=desc, disable=bar_disable())


class _NoBar:
    def update(self, n: int) -> None:
        """Nothing to show."""


def _chunked(plan: MergePlan) -> bool:
    """Whether the merge runs on chunks (then chunk threads pay off)."""
    try:
        return plan.chunk_mode(plan.params_for(None)) is not None
    except ConfigError:  # per-tensor rules without a default: decide per tensor
        return True


def _config_dir(plan: MergePlan) -> Path | None:
    """The folder whose config.json the output takes: the base's, else the first model's."""
    return model_dir(plan.config.base_model or plan.entries[0].model)


def _check_sources(plan: MergePlan) -> None:
    """A ``tokenizer_source`` must hold a tokenizer (checked before any weight is read).

    Raises:
        InputError: naming the folder, what it holds and how to fix the recipe.
    """
    src = plan.config.tokenizer_source
    if not src or src in ("base", "union") or plan.vocab is not None:
        return
    folder = model_dir(src)
    found = sorted(n for n in TOKENIZER_FILES if folder is not None and (folder / n).is_file())
    if not found:
        held = sorted(p.name for p in folder.iterdir())[:8] if folder is not None else []
        raise InputError(
            f"tokenizer_source {src!r} holds no tokenizer files (expected one of "
            f"tokenizer.json, vocab.txt, tokenizer.model ...; found {held or 'no such folder'}); "
            "point tokenizer_source at a model folder saved with its tokenizer, or remove the key "
            "to take the base model's"
        )


def _write_side_files(plan: MergePlan, tmp: Path, run: dict[str, Any]) -> None:
    cfg = plan.config
    copy_model_files(_config_dir(plan), tmp, torch_dtype=cfg.output_dtype)
    if cfg.tokenizer_source and cfg.tokenizer_source != "base":
        copy_model_files(plan.source_dir, tmp, names=TOKENIZER_FILES)
    write_config_updates(plan, tmp)  # slices: the layer count; the chat template
    resolved = cfg.model_dump(mode="json")
    card = model_card(
        recipe=plan.recipe,
        resolved=resolved,
        method=plan.method.name,
        paper=plan.method.paper,
        run=run,
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
