"""Internal helpers of :mod:`modularevo.modules.analysis`: base model, batches, plots.

The model and data layers are imported lazily, so ``modularevo.modules`` itself
stays free of transformers and datasets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask

log = logging.getLogger(__name__)

_CACHE: dict[tuple[str, str], tuple[nn.Module, Any]] = {}


def _run_config(module: ModuleMask) -> dict[str, Any]:
    cfg = module.metadata.get("config")
    if not isinstance(cfg, dict):
        raise InputError(
            "the module file has no modularize config in its metadata; pass model= and "
            "batches_for= to analyze_modules"
        )
    return cfg


def _model_and_tokenizer(module: ModuleMask) -> tuple[nn.Module, Any]:
    cfg = _run_config(module)
    key = (str(cfg["model"]), str(cfg["kind"]))
    if key not in _CACHE:
        from modularevo.models import load_model

        _CACHE[key] = load_model(*key)
    return _CACHE[key]


def load_base(module: ModuleMask) -> nn.Module:
    """The base model named in the module's run config."""
    return _model_and_tokenizer(module)[0]


def default_batches(
    module: ModuleMask, *, split: str = "test", max_texts: int = 512, max_batches: int = 16
) -> list[dict[str, Tensor]]:
    """Fixed LM batches on the module's own domain, as its run built them (seed 0 masking)."""
    from modularevo.data import load_dataset
    from modularevo.data.lm_batches import TokenIds, lm_batch, pack_texts
    from modularevo.utils.seed import derived_generator

    cfg = _run_config(module)
    model, tok = _model_and_tokenizer(module)
    texts = load_dataset(cfg["dataset"], **cfg.get("dataset_options", {}))[split]["text"]
    kind, bs = cfg["kind"], int(cfg["batch_size"])
    blocks = pack_texts(list(texts[:max_texts]), tok, max_length=int(cfg["max_length"]), kind=kind)
    ids = TokenIds.of(tok, vocab_size=getattr(model.config, "vocab_size", None))
    out = []
    for i in range(min(max_batches, -(-blocks.shape[0] // bs))):
        gen = derived_generator(0, "analysis", i)
        out.append(lm_batch(blocks[i * bs : (i + 1) * bs], kind, ids=ids, generator=gen,
                            mlm_probability=float(cfg["mlm_probability"])))  # fmt: skip
    return out


def write_plots(report: dict[str, Any], out: Path) -> None:
    """``density.png`` (per layer), ``overlap.png`` (Jaccard) and ``loss.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = report["modules"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, entry in mods.items():
        ax.plot(list(entry["density_per_layer"].values()), marker=".", label=label)
    ax.set(xlabel="masked layer (model order)", ylabel="kept fraction", title="density per layer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "density.png", dpi=120)
    plt.close(fig)
    names = list(mods)
    if len(names) > 1:
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.2 * len(names) + 1))
        grid = [
            [1.0 if a == b else report["overlap"][a][b]["jaccard"] for b in names] for a in names
        ]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(im, ax=ax, label="Jaccard")
        fig.tight_layout()
        fig.savefig(out / "overlap.png", dpi=120)
        plt.close(fig)
    with_loss = [n for n in names if "loss" in mods[n]]
    if with_loss:
        fig, ax = plt.subplots(figsize=(max(4, 1.5 * len(with_loss)), 3.5))
        for j, key in enumerate(("dense", "module", "random_twin")):
            xs = [i + (j - 1) * 0.27 for i in range(len(with_loss))]
            ax.bar(xs, [mods[n]["loss"][key] for n in with_loss], width=0.27, label=key)
        ax.set_xticks(range(len(with_loss)), with_loss, rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="domain LM loss", title="module vs dense vs random twin")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=120)
        plt.close(fig)
