"""Reuse an MwT-trained CNN: per-class modules, composed into a smaller CNN for a sub-task.

MwT (https://arxiv.org/abs/2306.09376) §3.3: a kernel belongs to the module of class ``c`` when
at least ``threshold`` of the class's training images switch it on (gate > 0). The module of a
sub-task ``T`` keeps the union of its classes' kernels and a head restricted to ``T``; it is built
as a physically smaller network (see ``MaskedVGG.shrink`` / ``MaskedResNet.shrink``).

Differences from the reference code (METHODS §6, pitfalls 28-30): the gates are collected on the
*un-augmented* training split in eval mode; by default the module keeps its (sliced) gate
generators, so it computes the modular model's function on the kept kernels and needs no
fine-tuning (``keep_gates=False`` drops them as the reference does); the head is the original
classifier restricted to ``T`` (no extra ReLU + Linear), so predictions are an argmax over ``T``.

Example:
    >>> report = extract_module("runs/mwt-digits", [0, 1, 2], "runs/mwt-digits-012")
    >>> report["krr"], report["test_acc"]
    >>> evaluate_module("runs/mwt-digits-012")["test_acc"]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError
from modularevo.mwt.config import MwTConfig
from modularevo.mwt.losses import class_kernel_frequency, jaccard_matrix, keep_kernels
from modularevo.mwt.models import MaskedCNN, build_model, gated_layers
from modularevo.mwt.train import (
    evaluate_accuracy,
    finetune_module,
    load_checked,
    load_images,
    load_run,
)
from modularevo.utils.atomic import atomic_dir, atomic_save_file, atomic_write_text

logger = logging.getLogger(__name__)

MODULE_FORMAT = "modularevo-mwt-module/1"


def parse_classes(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``.

    Raises:
        InputError: if the list is empty or holds something that is not an integer.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.lstrip("-").isdigit() for p in parts):
        raise InputError(f"--classes must be comma-separated class ids like 0,1,2, got {text!r}")
    return [int(p) for p in parts]


def check_classes(classes: Sequence[int], num_classes: int) -> list[int]:
    """Validate a sub-task's class ids against the model's class count.

    Raises:
        InputError: for an empty list, a repeated id, or an id outside ``[0, num_classes)``.
    """
    if not classes:
        raise InputError(f"the class list is empty; give ids in [0, {num_classes}), e.g. 0,1,2")
    unknown = [c for c in classes if not 0 <= c < num_classes]
    if unknown:
        raise InputError(
            f"unknown class id(s) {unknown}: the model has {num_classes} classes "
            f"(ids 0..{num_classes - 1}); pick ids from that range"
        )
    if len(set(classes)) != len(classes):
        raise InputError(f"class ids repeat in {list(classes)}; list each class once")
    return list(classes)


@torch.no_grad()
def collect_gates(model: MaskedCNN, x: Tensor, *, batch_size: int = 512) -> dict[str, Tensor]:
    """Gates of every gated layer over images ``x`` (eval mode): name → ``(N, C_l)``."""
    model.eval()
    names = list(gated_layers(model))
    parts: list[list[Tensor]] = [[] for _ in names]
    for i in range(0, len(x), batch_size):
        _, gates = model(x[i : i + batch_size])
        for part, g in zip(parts, gates, strict=True):
            part.append(g)
    return {n: torch.cat(p) for n, p in zip(names, parts, strict=True)}


def class_masks(
    gates: Mapping[str, Tensor], labels: Tensor, *, num_classes: int, threshold: float
) -> dict[str, Tensor]:
    """Per-class kernel masks: name → ``(K, C_l)`` bool (see :func:`~.mwt.keep_kernels`)."""
    return {
        n: keep_kernels(class_kernel_frequency(g, labels, num_classes), threshold)
        for n, g in gates.items()
    }


def module_keep(masks: Mapping[str, Tensor], classes: Sequence[int]) -> dict[str, Tensor]:
    """Kernel ids kept by the module of ``classes``: the union of their class masks."""
    rows = torch.tensor(list(classes), dtype=torch.long)
    return {n: m[rows].any(dim=0).nonzero().flatten() for n, m in masks.items()}


def kernel_retention_rate(masks: Mapping[str, Tensor]) -> float:
    """KRR: kept kernels / all kernels of the gated layers, for ``(C_l,)`` or ``(K, C_l)`` masks.

    With ``(K, C_l)`` masks this is the mean of the K per-class rates (all rows share the total).
    """
    if not masks:
        raise InputError("no masks given; the model has no gated layers")
    kept = sum(m.float().sum(dim=-1) for m in masks.values())
    total = sum(m.shape[-1] for m in masks.values())
    return float((torch.as_tensor(kept) / total).mean())


def module_metrics(
    gates: Mapping[str, Tensor], labels: Tensor, masks: Mapping[str, Tensor], *, max_per_class: int
) -> dict[str, Any]:
    """MwT's module metrics: per-class KRR, cohesion and coupling (Jaccard).

    Cohesion is the mean Jaccard similarity of the on-kernel sets of two images of a class, both
    restricted to the class module's kernels (all pairs ``i != j`` of the first ``max_per_class``
    images: O(n²), so capped). Coupling is the mean Jaccard similarity of two class modules.
    """
    names = list(masks)
    cls_masks = torch.cat([masks[n] for n in names], dim=1)  # (K, sum C_l)
    on = torch.cat([gates[n] > 0 for n in names], dim=1)  # (N, sum C_l)
    k = cls_masks.shape[0]
    cohesions = []
    for c in range(k):
        rows = on[labels == c][:max_per_class] & cls_masks[c]
        if len(rows) > 1:
            jac = jaccard_matrix(rows, rows)
            cohesions.append(
                float((jac.sum() - jac.diagonal().sum()) / (len(rows) ** 2 - len(rows)))
            )
    pair = jaccard_matrix(cls_masks, cls_masks)
    coupling = float(pair.triu(1).sum() / max(k * (k - 1) / 2, 1))
    per_class = [kernel_retention_rate({n: masks[n][c] for n in names}) for c in range(k)]
    return {
        "krr_per_class": [round(r, 5) for r in per_class],
        "krr_mean": round(sum(per_class) / k, 5),
        "cohesion": round(sum(cohesions) / max(len(cohesions), 1), 5),
        "coupling": round(coupling, 5),
    }


def subset(x: Tensor, y: Tensor, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images of ``classes`` with labels re-numbered to positions in ``classes``."""
    lookup = torch.full((max(int(y.max()), *classes) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(list(classes))] = torch.arange(len(classes))
    new = lookup[y]
    return x[new >= 0], new[new >= 0]


def compose_module(
    model: MaskedCNN, keep: Mapping[str, Tensor], classes: Sequence[int], *, keep_gates: bool = True
) -> MaskedCNN:
    """The stand-alone smaller CNN of ``classes`` (kernels ``keep``, head restricted to classes).

    Raises:
        InputError: for invalid classes or a ``keep`` that does not cover every gated layer.
    """
    check_classes(classes, model.num_classes)
    try:
        return model.shrink(keep, classes, keep_gates=keep_gates)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _write_module(
    out: str | Path,
    module: MaskedCNN,
    keep: Mapping[str, Tensor],
    report: dict[str, Any],
    *,
    overwrite: bool,
) -> None:
    """``module.safetensors`` (weights, kept ids, metadata) + ``module.json``, atomically."""
    names = ("classes", "data", "arch", "num_classes", "keep_gates", "max_eval_examples")
    meta = {k: report[k] for k in names}
    meta["format"] = MODULE_FORMAT
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in module.state_dict().items()}
    tensors.update({f"keep.{n}": idx.contiguous() for n, idx in keep.items()})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        atomic_save_file(tensors, tmp / "module.safetensors",
                         metadata={k: json.dumps(v) for k, v in meta.items()})  # fmt: skip
        atomic_write_text(tmp / "module.json", json.dumps(report, indent=2) + "\n")


def extract_module(
    run: str | Path,
    classes: Sequence[int],
    out: str | Path,
    *,
    threshold: float | None = None,
    keep_gates: bool = True,
    finetune_epochs: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build, measure and save the module of ``classes`` from an MwT run folder.

    Args:
        run: a folder written by :func:`~modularevo.mwt.train.train_mwt`.
        classes: the sub-task's class ids.
        out: module folder to write (``module.safetensors`` + ``module.json``), atomically.
        threshold: kernel-keeping threshold; default the run's ``threshold``.
        keep_gates: keep the sliced gate generators (default) or drop them like the reference.
        finetune_epochs: fine-tune the module on the train images of ``classes`` for this many
            epochs, keeping the epoch best on validation (0: no fine-tuning).
        overwrite: replace an existing ``out``.

    Returns:
        The report written to ``module.json``: classes, KRR of the module, per-class module
        metrics, and accuracy of the module and of the full model on the test images of
        ``classes``.

    Raises:
        InputError: for bad classes or threshold, a bad run folder, or an existing ``out``.
    """
    if Path(out).exists() and not overwrite:
        raise InputError(f"output {str(out)!r} already exists; choose another path or overwrite")
    model, cfg = load_run(run)
    classes = check_classes(classes, model.num_classes)
    thr = _check_threshold(cfg.threshold if threshold is None else threshold)
    x, y, k = load_images(cfg.data, "train", limit=cfg.max_train_examples)
    gates = collect_gates(model, x)
    masks = class_masks(gates, y, num_classes=k, threshold=thr)
    keep = module_keep(masks, classes)
    module = compose_module(model, keep, classes, keep_gates=keep_gates)
    report = {"classes": classes, "data": cfg.data, "arch": cfg.model, "threshold": thr,
              "keep_gates": keep_gates, "num_classes": k,
              "max_eval_examples": cfg.max_eval_examples}  # fmt: skip
    report |= _measure(model, module, keep, cfg, classes)
    if finetune_epochs:
        report["finetune"] = _finetune(module, cfg, classes, (x, y), finetune_epochs)
        report["test_acc_before_finetune"] = report["test_acc"]
        report["test_acc"] = _measure(model, module, keep, cfg, classes)["test_acc"]
    report["class_modules"] = module_metrics(gates, y, masks, max_per_class=512)
    _write_module(out, module, keep, report, overwrite=overwrite)
    logger.info("module %s: KRR %.4f, test acc %.4f", classes, report["krr"], report["test_acc"])
    return report


def _check_threshold(threshold: float) -> float:
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must lie in (0, 1], got {threshold}; the paper uses 0.9")
    return threshold


def _finetune(
    module: MaskedCNN,
    cfg: MwTConfig,
    classes: list[int],
    train: tuple[Tensor, Tensor],
    epochs: int,
) -> list[dict[str, float]]:
    """Fine-tune ``module`` on the sub-task (train split), picking the epoch on validation."""
    val = subset(*load_images(cfg.data, "validation", limit=cfg.max_eval_examples)[:2], classes)
    _, history = finetune_module(module, subset(*train, classes), val, epochs=epochs, lr=cfg.lr,
                                 batch_size=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    return history


def _measure(
    model: MaskedCNN,
    module: MaskedCNN,
    keep: Mapping[str, Tensor],
    cfg: MwTConfig,
    classes: list[int],
) -> dict[str, Any]:
    """KRR of the module, and module vs. full-model accuracy on the test images of ``classes``."""
    xt, yt = subset(*load_images(cfg.data, "test", limit=cfg.max_eval_examples)[:2], classes)
    kernels = {n: layer.kernels for n, layer in gated_layers(model).items()}
    return {
        "test_images": len(xt),
        "krr": round(_keep_rate(keep, kernels), 5),
        "kept_kernels": {n: int(i.numel()) for n, i in keep.items()},
        "test_acc": round(evaluate_accuracy(module, xt, yt), 5),
        "full_model_test_acc": round(_restricted_accuracy(model, xt, yt, classes), 5),
    }


def _keep_rate(keep: Mapping[str, Tensor], kernels: Mapping[str, int]) -> float:
    """KRR of one module from its kept kernel ids and each gated layer's kernel count."""
    return sum(int(keep[n].numel()) for n in kernels) / sum(kernels.values())


@torch.no_grad()
def _restricted_accuracy(model: MaskedCNN, x: Tensor, y: Tensor, classes: Sequence[int]) -> float:
    """Accuracy of the full model when its prediction is an argmax over ``classes`` only."""
    model.eval()
    logits, _ = model(x)
    return float((logits[:, list(classes)].argmax(1) == y).float().mean())


def load_module(path: str | Path) -> tuple[MaskedCNN, dict[str, Any]]:
    """Rebuild a module saved by :func:`extract_module` (a folder or its ``module.safetensors``).

    Returns:
        ``(module, metadata)``: metadata keys classes, data, arch, num_classes, keep_gates,
        max_eval_examples and keep (gated-layer name → kept kernel ids).

    Raises:
        InputError: if the file is missing, is not an MwT module, or its tensors do not fit.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    file = path / "module.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"no module at {str(path)!r}; pass the OUT folder of `mwt extract`")
    with safe_open(str(file), "pt") as fh:
        raw = fh.metadata() or {}
    if raw.get("format") != json.dumps(MODULE_FORMAT):
        raise InputError(
            f"{str(file)!r} has metadata {raw}, expected format {MODULE_FORMAT!r}; "
            "it was not written by `modularevo mwt extract`"
        )
    meta = {k: json.loads(v) for k, v in raw.items()}
    state = load_file(str(file))
    keep = {k.removeprefix("keep."): v for k, v in state.items() if k.startswith("keep.")}
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    full = build_model(meta["arch"], num_classes=meta["num_classes"])
    module = compose_module(full, keep, meta["classes"], keep_gates=meta["keep_gates"])
    load_checked(module, weights, source=str(file))
    return module, {**meta, "keep": keep}


def evaluate_module(path: str | Path, *, split: str = "test") -> dict[str, Any]:
    """Accuracy and KRR of a saved module on ``split`` of its classes.

    Raises:
        InputError: if the module cannot be loaded or the split has no image of its classes.
    """
    module, meta = load_module(path)
    # The same slice of the split as `extract` measured on (its run's max_eval_examples).
    x, y, _ = load_images(meta["data"], split, limit=meta.get("max_eval_examples"))
    xs, ys = subset(x, y, meta["classes"])
    full = build_model(meta["arch"], num_classes=meta["num_classes"])
    kernels = {n: layer.kernels for n, layer in gated_layers(full).items()}
    return {
        "classes": meta["classes"], "split": split, "images": len(xs),
        f"{split}_acc": round(evaluate_accuracy(module, xs, ys), 5),
        "krr": round(_keep_rate(meta["keep"], kernels), 5),
    }  # fmt: skip
