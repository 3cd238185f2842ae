"""Module analysis: density per layer, overlap between modules, loss against a random twin.

A module that does not beat its *random twin* (a random mask with exactly the same
number of kept entries in every parameter) on its own domain is a failed module.
:func:`analyze_modules` evaluates, for each module file, the domain LM loss of

- the dense model (with ``head-dense.safetensors`` when the run trained a head),
- the module (with the head saved next to its snapshot),
- its random twin, with both heads; the lower loss is reported, so the comparison
  never favours the module,

on a held-out split (``test`` by default: analysis reports, it selects nothing), and
writes ``analysis.json`` plus ``density.png``, ``overlap.png`` and ``loss.png``.

Example:
    >>> paths = ["runs/math/module-0.25.safetensors"]
    >>> report = analyze_modules(paths, out_dir="runs/an")  # doctest: +SKIP
    >>> report["modules"]["math@0.25"]["loss"]  # doctest: +SKIP
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

__all__ = ["analyze_modules", "density_per_layer", "domain_loss", "overlaps", "random_twin"]


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


@torch.no_grad()
def domain_loss(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    masks: Mapping[str, Tensor] | None = None,
    head: Mapping[str, Tensor] | None = None,
) -> float:
    """Mean LM loss of ``model`` over ``batches`` with a hard mask and/or a head swapped in.

    The model itself is not modified: masked weights and head tensors are substituted
    per call with :func:`torch.func.functional_call`.
    """
    was_training = model.training
    model.eval()
    params = masked_state(model, masks or {})
    params.update(dict(head or {}))
    losses = [
        float(functional_call(model, params, (), dict(b), strict=False).loss) for b in batches
    ]
    model.train(was_training)
    return sum(losses) / max(len(losses), 1)


def _read_head(path: Path) -> dict[str, Tensor] | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))


def _label(path: Path, module: ModuleMask) -> str:
    level = module.metadata.get("level")
    return f"{module.domain or path.stem}@{level}" if level is not None else path.stem


def _module_losses(
    model: nn.Module, module: ModuleMask, path: Path, batches: list, seed: int
) -> dict[str, float]:
    tag = path.stem.removeprefix("module-")
    own_head = _read_head(path.parent / f"head-{tag}.safetensors")
    dense_head = _read_head(path.parent / "head-dense.safetensors")
    twin = random_twin(module, torch.Generator().manual_seed(seed))
    twin_losses = [
        domain_loss(model, batches, masks=twin.masks, head=h) for h in (own_head, dense_head) if h
    ]
    if not twin_losses:
        twin_losses = [domain_loss(model, batches, masks=twin.masks)]
    out = {
        "dense": domain_loss(model, batches, head=dense_head or own_head),
        "module": domain_loss(model, batches, masks=module.masks, head=own_head),
        "random_twin": min(twin_losses),
    }
    out["module_minus_twin"] = out["module"] - out["random_twin"]
    return out


def analyze_modules(
    paths: Sequence[str | Path],
    *,
    out_dir: str | Path,
    model: nn.Module | None = None,
    batches_for: Any = None,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Any]:
    """Analyze module files: density per layer, overlaps, domain loss vs dense and random twin.

    Args:
        paths: module files (from ``modularevo modularize``) of one base model.
        out_dir: folder for ``analysis.json`` and the plots.
        model: the base model; by default loaded from the first module's config.
        batches_for: ``fn(module) -> list of LM batches`` on that module's domain; by
            default built from the module's own config (dataset, kind, max_length) on
            the ``test`` split. ``None`` from the function skips the loss comparison.
        seed: seed of the random twins.
        plots: write the PNG plots.

    Returns:
        The report written to ``analysis.json``.

    Raises:
        InputError: unreadable module files, or modules of another base model.
    """
    from modularevo.modules import _analysis_data as data

    paths = [Path(p) for p in paths]
    first = load_module(paths[0])
    if model is None:
        model = data.load_base(first)
    params = list(model.named_parameters())
    modules = {}
    for p in paths:
        module = load_module(p, params=params)
        modules[_label(p, module)] = (p, module)
    batches_for = batches_for or data.default_batches
    report: dict[str, Any] = {
        "modules": {},
        "overlap": overlaps({k: m for k, (_, m) in modules.items()}),
    }
    for label, (path, module) in modules.items():
        entry: dict[str, Any] = {"path": str(path), "domain": module.domain,
                                 "density": module.density(),
                                 "density_per_layer": density_per_layer(module)}  # fmt: skip
        batches = batches_for(module)
        if batches:
            entry["loss"] = _module_losses(model, module, path, batches, seed)
            entry["beats_random_twin"] = entry["loss"]["module_minus_twin"] < 0
        report["modules"][label] = entry
        log.info("%s: density %.4f, loss %s", label, entry["density"], entry.get("loss"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "analysis.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if plots:
        data.write_plots(report, out)
    return report
