"""Train a CNN with MwT (https://arxiv.org/abs/2306.09376), and read a finished run back.

The loop is written out: seeded shuffling, one :func:`train_step` per batch, an evaluation on the
validation split after each epoch. The run folder is built in a hidden temporary folder and
renamed at the end, so a killed run leaves no half-written output. It holds
``config.resolved.yaml`` (config + versions + seed), ``metrics.jsonl`` (one row per epoch, then a
``test`` row) and ``model.safetensors`` (weights; the architecture is in its metadata).

Example:
    >>> cfg = load_mwt_config(None, ["model=test_vgg", "epochs=1"])
    >>> run = train_mwt(cfg, "runs/mwt-digits")
    >>> model, cfg = load_run(run)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from modularevo.config.load import validate
from modularevo.data import load_dataset
from modularevo.errors import InputError
from modularevo.mwt.config import MwTConfig
from modularevo.mwt.losses import MwTLoss, mwt_loss
from modularevo.mwt.models import MaskedCNN, build_model
from modularevo.utils.atomic import atomic_dir, atomic_save_file, atomic_write_text
from modularevo.utils.curves import Curves
from modularevo.utils.progress import bar_disable
from modularevo.utils.runinfo import run_info
from modularevo.utils.seed import derived_generator, seed_everything

logger = logging.getLogger(__name__)


def load_images(name: str, split: str, *, limit: int | None = None) -> tuple[Tensor, Tensor, int]:
    """A registered image set's split as tensors.

    Args:
        name: ``digits``, ``mnist`` or ``fashion-mnist``.
        split: ``train``, ``validation`` or ``test``.
        limit: keep only the first ``limit`` images (the splits are in a seeded random order).

    Returns:
        ``(images (N, 1, H, W) float in [-1, 1], labels (N,) long, num_classes)``.

    Raises:
        InputError: if the set is not an image set or the split is empty.
    """
    dsd = load_dataset(name)
    if split not in dsd or "image" not in dsd[split].column_names:
        raise InputError(
            f"dataset {name!r} has no image split {split!r} (splits {list(dsd)}, columns "
            f"{dsd[next(iter(dsd))].column_names}); use digits, mnist or fashion-mnist"
        )
    ds = dsd[split]
    n = min(limit or len(ds), len(ds))
    if n == 0:
        raise InputError(f"split {split!r} of {name!r} is empty")
    images, labels = _columns(ds)
    x = torch.from_numpy(images[:n].astype(np.float32) / 127.5 - 1.0)[:, None]  # (N, 1, H, W)
    y = torch.from_numpy(labels[:n].astype(np.int64))
    return x, y, int(ds.features["label"].num_classes)


def _columns(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (N, H, W) uint8 and ``label`` (N,), read straight from Arrow (row-wise is slow)."""
    column = ds.data.column("image").combine_chunks()
    if len(column) != len(ds):  # an indices mapping over the table: take the slow, safe path
        return np.asarray(ds.with_format("numpy")["image"]), np.asarray(ds["label"])
    flat = np.asarray(column.storage.flatten().flatten())
    images = flat.reshape(len(ds), *ds.features["image"].shape)
    return images, np.asarray(ds.data.column("label"))


def train_step(
    model: MaskedCNN,
    batch: tuple[Tensor, Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    alpha: float,
    beta: float,
) -> MwTLoss:
    """One MwT update of ``model`` (and its gate generators) on ``batch``; the loss, detached."""
    x, y = batch
    model.train()
    logits, gates = model(x)
    loss = mwt_loss(logits, y, gates, alpha=alpha, beta=beta)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    return MwTLoss(*(t.detach() for t in loss))


@torch.no_grad()
def evaluate_accuracy(
    model: torch.nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 512
) -> float:
    """Top-1 accuracy of ``model`` (which returns ``(logits, gates)``) on ``x``, ``y``."""
    if len(x) == 0:
        raise InputError("cannot evaluate on zero images; check the class list and the split")
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        logits, _ = model(x[i : i + batch_size])
        correct += int((logits.argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=generator)
    # Drop a last batch of one image: it has no pair, and BatchNorm cannot train on it.
    return [b for b in order.split(batch_size) if len(b) > 1]


def _write_header(tmp: Path, cfg: MwTConfig) -> None:
    resolved = {**cfg.model_dump(mode="json"), "run_info": run_info(cfg.seed)}
    atomic_write_text(tmp / "config.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _means(rows: list[MwTLoss]) -> dict[str, float]:
    return {k: round(float(torch.stack([getattr(r, k) for r in rows]).float().mean()), 5)
            for k in MwTLoss._fields}  # fmt: skip


def _optimizer(model: MaskedCNN, cfg: MwTConfig, total: int) -> tuple[Any, Any]:
    # Gate generators share the CNN's lr: the reference ties lr_mask to lr_model silently.
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)  # fmt: skip
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))


_CURVE_NAMES = {"total": "loss", "ce": "ce_loss"}


def _run_epochs(
    model: MaskedCNN, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], cfg: MwTConfig,
    metrics: Path,
) -> int:  # fmt: skip
    """The explicit loop: epochs of seeded batches, one validation row per epoch; returns steps."""
    (x, y), n = train, len(train[0])
    total = min(cfg.epochs * len(_epoch_batches(n, cfg.batch_size, torch.Generator())),
                cfg.max_steps or math.inf)  # fmt: skip
    opt, sched = _optimizer(model, cfg, int(total))
    gen = derived_generator(cfg.seed, "mwt-shuffle")
    step, bar = 0, tqdm(total=int(total), desc="mwt", disable=bar_disable(cfg.progress))
    curves = Curves(metrics.parent, "mwt", tracker=cfg.tracker)
    for epoch in range(cfg.epochs):
        rows: list[MwTLoss] = []
        for idx in _epoch_batches(n, cfg.batch_size, gen):
            if step >= total:
                break
            rows.append(train_step(model, (x[idx], y[idx]), opt, alpha=cfg.alpha, beta=cfg.beta))
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(rows[-1].total):.3f}")
            parts = rows[-1]._asdict()
            curves.log({f"train/{_CURVE_NAMES.get(k, k)}": float(v) for k, v in parts.items()},
                       step)  # fmt: skip
        if not rows:
            break
        row = {"epoch": epoch, "step": step, **_means(rows), "lr": sched.get_last_lr()[0],
               "val_acc": round(evaluate_accuracy(model, *val), 5)}  # fmt: skip
        _append(metrics, row)
        curves.log({"val/accuracy": row["val_acc"]}, step)
        logger.info("epoch %d: %s", epoch, row)
    bar.close()
    curves.close(title=f"MwT {cfg.model} on {cfg.data} (seed {cfg.seed})")
    return step


def train_mwt(cfg: MwTConfig, out: str | Path, *, overwrite: bool = False) -> Path:
    """Train ``cfg.model`` on ``cfg.data`` with the MwT loss and write the run folder ``out``.

    Args:
        cfg: the validated run config.
        out: output folder; written atomically.
        overwrite: replace an existing folder.

    Returns:
        The run folder.

    Raises:
        InputError: if ``out`` exists (without ``overwrite``) or the data set is unusable.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(
            f"output {str(out)!r} already exists; choose another path or pass --overwrite"
        )
    seed_everything(cfg.seed)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    x, y, num_classes = load_images(cfg.data, "train", limit=cfg.max_train_examples)
    val = load_images(cfg.data, "validation", limit=cfg.max_eval_examples)[:2]
    model = build_model(cfg.model, num_classes=num_classes)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        _write_header(tmp, cfg)
        step = _run_epochs(model, (x, y), val, cfg, tmp / "metrics.jsonl")
        xt, yt, _ = load_images(cfg.data, "test", limit=cfg.max_eval_examples)
        test_row = {
            "split": "test",
            "step": step,
            "acc": round(evaluate_accuracy(model, xt, yt), 5),
        }
        _append(tmp / "metrics.jsonl", test_row)
        save_model(model, tmp / "model.safetensors", arch=cfg.model, num_classes=num_classes)
    logger.info("MwT run written to %s (test accuracy %.4f)", out, test_row["acc"])
    return out


def save_model(model: MaskedCNN, path: Path, *, arch: str, num_classes: int) -> Path:
    """Write ``model``'s weights with its architecture name and class count as metadata."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": arch, "num_classes": str(num_classes), "format": "modularevo-mwt/1"}
    return atomic_save_file(tensors, path, metadata=meta)


def load_model(path: str | Path) -> MaskedCNN:
    """Rebuild a model written by :func:`save_model`.

    Raises:
        InputError: if the file is missing, was not written by MwT training, or its tensors do
            not fit the named architecture.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no model file at {str(path)!r}; pass a run folder from `mwt train`")
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "modularevo-mwt/1":
        raise InputError(
            f"{str(path)!r} has metadata {meta}, expected format 'modularevo-mwt/1' with arch and "
            "num_classes; it was not written by `modularevo mwt train`"
        )
    model = build_model(meta["arch"], num_classes=int(meta["num_classes"]))
    load_checked(model, load_file(str(path)), source=str(path))
    return model


def load_checked(model: torch.nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    """``load_state_dict`` with an :class:`InputError` that names the mismatching tensors."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    if diff:
        shown = ", ".join(f"{k}: file {got.get(k)} vs model {want.get(k)}" for k in diff[:5])
        raise InputError(
            f"{source} does not match its architecture ({len(diff)} tensor(s) differ: {shown}); "
            "it was written by another model or version; re-run `modularevo mwt train`/`extract`"
        )
    model.load_state_dict(state)


def load_run(run: str | Path) -> tuple[MaskedCNN, MwTConfig]:
    """The trained model and config of a run folder written by :func:`train_mwt`.

    Raises:
        InputError: if the folder lacks ``model.safetensors`` or ``config.resolved.yaml``.
        ConfigError: if the stored config is not valid.
    """
    run = Path(run)
    cfg_path = run / "config.resolved.yaml"
    if not cfg_path.is_file():
        raise InputError(
            f"{str(run)!r} is not an MwT run folder (no config.resolved.yaml); "
            "pass the OUT folder of `modularevo mwt train`"
        )
    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    data.pop("run_info", None)
    cfg = validate(MwTConfig, data, source=str(cfg_path))
    return load_model(run / "model.safetensors"), cfg


def _ce_step(module: MaskedCNN, batch: tuple[Tensor, Tensor], opt: Any, sched: Any) -> float:
    module.train()
    logits, _ = module(batch[0])
    loss = torch.nn.functional.cross_entropy(logits, batch[1])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def finetune_module(
    module: MaskedCNN,
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    *,
    epochs: int,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
) -> tuple[MaskedCNN, list[dict[str, float]]]:
    """Fine-tune a composed module with cross-entropy; keep the epoch best on *validation*.

    MwT fine-tunes every module for 10 epochs (SGD, Nesterov, cosine) and picks the best epoch
    by test accuracy; here the pick uses the validation split, so test accuracy stays unbiased.

    Args:
        module: the module (modified in place and returned with the best weights loaded).
        train: images and labels (already re-numbered to the module's classes).
        val: validation images and labels of the same classes.
        epochs: passes over ``train``.
        lr: SGD learning rate.
        batch_size: images per step.
        seed: seed of the batch order.

    Returns:
        The module and one ``{"epoch", "loss", "val_acc"}`` row per epoch.
    """
    steps = epochs * max(len(_epoch_batches(len(train[0]), batch_size, torch.Generator())), 1)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = derived_generator(seed, "mwt-module-finetune")
    best = (evaluate_accuracy(module, *val), {k: v.clone() for k, v in module.state_dict().items()})
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        losses = [
            _ce_step(module, (train[0][idx], train[1][idx]), opt, sched)
            for idx in _epoch_batches(len(train[0]), batch_size, gen)
        ]
        acc = evaluate_accuracy(module, *val)
        history.append({"epoch": epoch, "loss": round(sum(losses) / max(len(losses), 1), 5),
                        "val_acc": round(acc, 5)})  # fmt: skip
        if acc > best[0]:
            best = (acc, {k: v.clone() for k, v in module.state_dict().items()})
    module.load_state_dict(best[1])
    return module, history
