"""Module analysis: is a learned module a *domain* module, or would a random mask do?

Every comparison here is fair by construction (issue 12, STYLE.md rule 13):

- the **random twin** of a module keeps exactly as many entries as the module in every
  parameter (so the same per-layer density), drawn from a seeded generator;
- every row (dense model, modules, twins) is scored with **one frozen LM head**: the
  head saved beside the modules (warmed up on the dense model, never trained with a
  mask), or the checkpoint's own head;
- every row is scored on the **same evaluation batches**, so differences are paired per
  batch and reported with a 95% bootstrap interval.

:func:`analyze_modules` writes ``analysis.json`` with the **domain × corpus loss
matrix** (module of domain d on corpus d', plus dense and twin rows), a verdict per
module (beats its twin; domain-specific: best on its own corpus against every module of
another domain), and **seed stability** (Jaccard of same-domain/different-seed pairs
against different-domain pairs, each with its random expectation), plus plots.

Example:
    >>> paths = ["runs/math/module-0.25.safetensors", "runs/law/module-0.25.safetensors"]
    >>> report = analyze_modules(paths, out_dir="runs/an")  # doctest: +SKIP
    >>> report["verdicts"]["math@0.25"]["domain_specific"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modularevo.modules.io import load_module
from modularevo.modules.layers import masked_state
from modularevo.modules.mask import ModuleMask

log = logging.getLogger(__name__)

__all__ = [
    "analyze_modules",
    "batch_losses",
    "density_per_layer",
    "domain_loss",
    "expected_jaccard",
    "overlaps",
    "paired_interval",
    "random_module",
    "random_twin",
    "seed_stability",
]


def density_per_layer(module: ModuleMask) -> dict[str, float]:
    """Kept fraction per layer (weights and bias of one Linear pooled), in mask order."""
    kept: dict[str, list[int]] = {}
    for name, m in module.masks.items():
        layer = name.rsplit(".", 1)[0]
        k = kept.setdefault(layer, [0, 0])
        k[0] += int(m.sum())
        k[1] += m.numel()
    return {layer: k / max(n, 1) for layer, (k, n) in kept.items()}


def overlaps(modules: Mapping[str, ModuleMask]) -> dict[str, dict[str, dict[str, float]]]:
    """Pairwise :meth:`ModuleMask.overlap` (Jaccard and shares) between named modules."""
    names = list(modules)
    return {a: {b: modules[a].overlap(modules[b]) for b in names if b != a} for a in names}


def random_twin(module: ModuleMask, generator: torch.Generator) -> ModuleMask:
    """A random mask with exactly as many kept entries as ``module`` in every parameter."""
    masks = {}
    for name, m in module.masks.items():
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        masks[name] = flat.view(m.shape)
    return ModuleMask(masks=masks, domain=module.domain, metadata={"random_twin_of": module.domain})


def random_module(module: ModuleMask, *, seed: int) -> ModuleMask:
    """The random control of ``module``: same per-parameter density, seeded, same base.

    Unlike :func:`random_twin` it keeps the module's fingerprints and run metadata, so it
    is saved with :func:`~modularevo.modules.io.save_module` and accepted wherever the
    module is (fine-tuning, the module-aware merge, evolution, deployment).

    Args:
        module: the learned module.
        seed: seed of the random draw.

    Returns:
        A :class:`ModuleMask` marked ``metadata["random_control"] = True``.
    """
    twin = random_twin(module, torch.Generator().manual_seed(seed))
    meta = {**dict(module.metadata), "random_control": True, "random_seed": seed,
            "random_of_density": module.density()}  # fmt: skip
    return ModuleMask(masks=twin.masks, domain=module.domain,
                      arch_fingerprint=module.arch_fingerprint,
                      base_fingerprint=module.base_fingerprint, metadata=meta)  # fmt: skip


def expected_jaccard(a: ModuleMask, b: ModuleMask) -> float:
    """Jaccard of two independent random masks with the per-parameter counts of ``a`` and ``b``."""
    inter = union = 0.0
    for n, m in a.masks.items():
        ka, kb, total = float(m.sum()), float(b.masks[n].sum()), float(m.numel())
        shared = ka * kb / max(total, 1.0)
        inter += shared
        union += ka + kb - shared
    return inter / union if union else 1.0


def _lm_loss(
    model: nn.Module, params: Mapping[str, Tensor], batch: Mapping[str, Tensor], head: str | None
) -> Tensor:
    """LM loss; with ``head`` (masked LMs) the vocabulary projection runs on scored tokens only."""
    if head is None or "labels" not in batch:
        return functional_call(model, dict(params), (), dict(batch), strict=False).loss
    prefix = str(getattr(model, "base_model_prefix", ""))
    body = {n[len(prefix) + 1 :]: t for n, t in params.items() if n.startswith(prefix + ".")}
    top = {n[len(head) + 1 :]: t for n, t in params.items() if n.startswith(head + ".")}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = functional_call(getattr(model, prefix), body, (), inputs, strict=False)[0]
    scored = batch["labels"] != -100
    logits = functional_call(model.get_submodule(head), top, (hidden[scored],), strict=False)
    return nn.functional.cross_entropy(logits.float(), batch["labels"][scored])


@torch.no_grad()
def batch_losses(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    masks: Mapping[str, Tensor] | None = None,
    head: Mapping[str, Tensor] | None = None,
    sparse_head: str | None = None,
) -> list[float]:
    """LM loss per batch with a hard mask and/or head tensors swapped in (model untouched)."""
    was_training = model.training
    model.eval()
    params = masked_state(model, masks or {})
    params.update(dict(head or {}))
    out = [float(_lm_loss(model, params, b, sparse_head)) for b in batches]
    model.train(was_training)
    return out


def domain_loss(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    masks: Mapping[str, Tensor] | None = None,
    head: Mapping[str, Tensor] | None = None,
) -> float:
    """Mean LM loss of ``model`` over ``batches`` with a hard mask and/or a head swapped in."""
    losses = batch_losses(model, batches, masks=masks, head=head)
    return sum(losses) / max(len(losses), 1)


def paired_interval(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``a - b`` over paired items with a 95% percentile-bootstrap interval.

    Returns:
        ``{"diff", "lo", "hi", "n"}``.
    """
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    n = d.numel()
    g = torch.Generator().manual_seed(seed)
    means = d[torch.randint(0, n, (resamples, n), generator=g)].mean(dim=1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "n": n}


def _seed_of(module: ModuleMask) -> Any:
    cfg = module.metadata.get("config")
    return cfg.get("seed") if isinstance(cfg, dict) else module.metadata.get("seed")


def seed_stability(modules: Mapping[str, ModuleMask]) -> dict[str, Any]:
    """Jaccard of same-domain/different-seed pairs and of different-domain pairs.

    Random controls are left out. Each pair carries its random expectation
    (:func:`expected_jaccard`); the summary gives the mean of each group.
    """
    learned = {k: m for k, m in modules.items() if not m.metadata.get("random_control")}
    names = list(learned)
    pairs: dict[str, list[dict[str, Any]]] = {"same_domain": [], "different_domain": []}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ma, mb = learned[a], learned[b]
            if ma.domain == mb.domain and _seed_of(ma) == _seed_of(mb):
                continue
            group = "same_domain" if ma.domain == mb.domain else "different_domain"
            pairs[group].append({"a": a, "b": b, "jaccard": ma.overlap(mb)["jaccard"],
                                 "random_expectation": expected_jaccard(ma, mb)})  # fmt: skip
    summary = {
        g: {
            "n": len(v),
            "mean_jaccard": sum(p["jaccard"] for p in v) / len(v) if v else None,
            "mean_random_expectation": (
                sum(p["random_expectation"] for p in v) / len(v) if v else None
            ),
        }
        for g, v in pairs.items()
    }
    same, diff = summary["same_domain"]["mean_jaccard"], summary["different_domain"]["mean_jaccard"]
    holds = same > diff if same is not None and diff is not None else None
    return {"pairs": pairs, "summary": summary, "same_above_different": holds}


def _label(path: Path, module: ModuleMask) -> str:
    level = module.metadata.get("level")
    base = f"{module.domain or path.stem}@{level}" if level is not None else path.stem
    seed = _seed_of(module)
    if seed not in (None, 0):
        base += f"/s{seed}"
    if module.metadata.get("random_control"):
        base += f"/random{module.metadata.get('random_seed', '')}"
    return base


def _matrix(
    model: nn.Module,
    rows: Mapping[str, Mapping[str, Tensor] | None],
    corpora: Mapping[str, list[dict[str, Tensor]]],
    head: Mapping[str, Tensor] | None,
    sparse_head: str | None,
) -> dict[str, dict[str, list[float]]]:
    """Per-batch losses: row (a mask; None = dense) -> corpus -> [loss per batch]."""
    out: dict[str, dict[str, list[float]]] = {}
    for row, masks in rows.items():
        out[row] = {c: batch_losses(model, b, masks=masks, head=head, sparse_head=sparse_head)
                    for c, b in corpora.items()}  # fmt: skip
        log.info("%s: %s", row, {c: round(sum(v) / len(v), 4) for c, v in out[row].items()})
    return out


def _mean(v: Sequence[float]) -> float:
    return sum(v) / max(len(v), 1)


def _verdicts(
    modules: Mapping[str, ModuleMask], per_batch: Mapping[str, Mapping[str, list[float]]]
) -> dict[str, Any]:
    """Per module: module − twin on its own corpus, and against each other-domain module."""
    out: dict[str, Any] = {}
    for label, m in modules.items():
        own = m.domain
        if own not in per_batch[label]:
            continue
        twin = paired_interval(per_batch[label][own], per_batch[f"twin:{label}"][own])
        rivals = {
            other: paired_interval(per_batch[other][own], per_batch[label][own])
            for other, mo in modules.items()
            if mo.domain != own and not mo.metadata.get("random_control")
        }
        beats_twin = twin["hi"] < 0
        best = all(r["lo"] > 0 for r in rivals.values()) if rivals else None
        out[label] = {"corpus": own, "module_minus_twin": twin,
                      "other_minus_module": rivals, "beats_twin": beats_twin,
                      "best_on_own_corpus": best,
                      "domain_specific": bool(beats_twin and best)}  # fmt: skip
    return out


def _best_per_corpus(
    modules: Mapping[str, ModuleMask], means: Mapping[str, Mapping[str, float]]
) -> dict[str, Any]:
    learned = [k for k, m in modules.items() if not m.metadata.get("random_control")]
    corpora = sorted({c for k in learned for c in means[k]})
    best = {c: min(learned, key=lambda k: means[k][c]) for c in corpora}
    hits = [c for c in corpora if modules[best[c]].domain == c]
    scored = [c for c in corpora if any(modules[k].domain == c for k in learned)]
    return {"best_module": best, "own_domain_best": hits, "count": len(hits), "of": len(scored)}


def analyze_modules(
    paths: Sequence[str | Path],
    *,
    out_dir: str | Path,
    model: nn.Module | None = None,
    corpora: Mapping[str, list[dict[str, Tensor]]] | None = None,
    head: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    split: str = "test",
    max_batches: int = 16,
    plots: bool = True,
) -> dict[str, Any]:
    """Analyze module files of one base model: loss matrix, twins, verdicts, seed stability.

    Args:
        paths: module files (from ``modularevo modularize`` or ``random-module``).
        out_dir: folder for ``analysis.json`` and the plots.
        model: the base model; by default loaded from the first module's config.
        corpora: corpus name -> fixed LM batches; by default every module domain's
            ``split``, built as the first module's run built its batches.
        head: LM head tensors used for every row; by default the head saved beside the
            first module (``head.safetensors``), else the model's own head.
        seed: seed of the random twins.
        split: split of the default corpora (analysis reports, it selects nothing).
        max_batches: batches per default corpus (0: no losses, only overlaps and seeds).
        plots: write the PNG plots.

    Returns:
        The report written to ``analysis.json``.

    Raises:
        InputError: unreadable module files, or modules of another base model.
    """
    # deferred: loading models and corpora imports transformers and datasets; the mask
    # statistics and random twins of this module need neither
    from modularevo.modules import _analysis_data as data

    paths = [Path(p) for p in paths]
    first = load_module(paths[0])
    model = model if model is not None else data.load_base(first)
    params = list(model.named_parameters())
    modules: dict[str, ModuleMask] = {}
    for p in paths:
        module = load_module(p, params=params)
        modules[_label(p, module)] = module
    head_info = {"source": "given"} if head is not None else data.find_head(paths, modules)
    if head is None and head_info.get("path"):
        head = data.read_head(head_info["path"])
    sparse = data.sparse_head_name(model, first)
    if corpora is None and max_batches == 0:
        corpora = {}  # overlaps and seed stability only
    if corpora is None:
        names = list(dict.fromkeys(m.domain for m in modules.values()))
        corpora = {c: data.corpus_batches(first, model, c, split=split, max_batches=max_batches)
                   for c in names}  # fmt: skip
    rows: dict[str, Mapping[str, Tensor] | None] = {"dense": None}
    for i, (label, m) in enumerate(modules.items()):
        rows[label] = m.masks
        rows[f"twin:{label}"] = random_twin(m, torch.Generator().manual_seed(seed + i)).masks
    per_batch = _matrix(model, rows, corpora, head, sparse)
    means = {r: {c: _mean(v) for c, v in cs.items()} for r, cs in per_batch.items()}
    report: dict[str, Any] = {
        "head": head_info,
        "corpora": {c: len(b) for c, b in corpora.items()},
        "split": split,
        "twin_seed": seed,
        "modules": {
            label: {
                "domain": m.domain,
                "density": m.density(),
                "seed": _seed_of(m),
                "random_control": bool(m.metadata.get("random_control")),
                "density_per_layer": density_per_layer(m),
            }
            for label, m in modules.items()
        },
        "loss_matrix": means,
        "loss_per_batch": per_batch,
        "verdicts": _verdicts(modules, per_batch),
        "best_per_corpus": _best_per_corpus(modules, means),
        "seed_stability": seed_stability(modules),
        "overlap": overlaps(modules),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if plots:
        data.write_plots(report, out)
    return report
