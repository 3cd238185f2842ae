"""Internal helpers of :mod:`modularevo.modules.analysis`: base model, head, batches, plots.

The model and data layers are imported lazily, so ``modularevo.modules`` itself
stays free of transformers and datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modularevo.data import load_dataset
from modularevo.data.lm_batches import TokenIds, lm_batch, pack_texts
from modularevo.errors import InputError
from modularevo.models import load_model
from modularevo.models.arch import describe
from modularevo.modules.mask import ModuleMask
from modularevo.utils.plots import density_grid, overlap_heatmap
from modularevo.utils.seed import derived_generator

log = logging.getLogger(__name__)

_CACHE: dict[tuple[str, str], tuple[nn.Module, Any]] = {}
HEAD_FILE = "head.safetensors"


def _run_config(module: ModuleMask) -> dict[str, Any]:
    cfg = module.metadata.get("config")
    if not isinstance(cfg, dict):
        raise InputError(
            "the module file has no modularize config in its metadata; pass model= and "
            "corpora= to analyze_modules"
        )
    return cfg


def _model_and_tokenizer(module: ModuleMask) -> tuple[nn.Module, Any]:
    cfg = _run_config(module)
    key = (str(cfg["model"]), str(cfg["kind"]))
    if key not in _CACHE:
        _CACHE[key] = load_model(*key)
    return _CACHE[key]


def load_base(module: ModuleMask) -> nn.Module:
    """The base model named in the module's run config."""
    return _model_and_tokenizer(module)[0]


def read_head(path: str | Path) -> dict[str, Tensor]:
    """Head tensors from a ``head.safetensors`` file."""
    from safetensors.torch import load_file

    return load_file(str(path))


def _head_key(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return (fh.metadata() or {}).get("key", "")


def find_head(paths: Sequence[Path], modules: Mapping[str, ModuleMask]) -> dict[str, Any]:
    """The one LM head every row is scored with: the file beside the first module that has one.

    Heads beside the other modules are compared by their cache key; a module learned
    with another head is named in ``mismatched`` (it is still scored with this head).
    """
    found = [(p, p.parent / HEAD_FILE) for p in paths if (p.parent / HEAD_FILE).is_file()]
    if not found:
        return {"source": "the model's own LM head"}
    keys = {str(p): _head_key(h) for p, h in found}
    key = keys[str(found[0][0])]
    mismatched = [p for p, k in keys.items() if k != key]
    if mismatched:
        log.warning("modules learned with another head (scored with %s): %s", found[0][1],
                    mismatched)  # fmt: skip
    return {"source": "file", "path": str(found[0][1]), "key": key, "mismatched": mismatched}


def sparse_head_name(model: nn.Module, module: ModuleMask) -> str | None:
    """The MLM head module name when the scored-tokens-only path applies, else None."""
    cfg = module.metadata.get("config")
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    arch = describe(model)
    prefix = getattr(model, "base_model_prefix", "")
    if kind == "masked_lm" and len(arch.heads) == 1 and prefix and hasattr(model, prefix):
        return arch.heads[0]
    return None


def corpus_batches(
    module: ModuleMask,
    model: nn.Module,
    corpus: str,
    *,
    split: str = "test",
    max_texts: int = 512,
    max_batches: int = 16,
) -> list[dict[str, Tensor]]:
    """Fixed LM batches of ``corpus`` built as the module's run built its batches (seed 0)."""
    cfg = _run_config(module)
    tok = _model_and_tokenizer(module)[1]
    opts = cfg.get("dataset_options", {}) if corpus == cfg["dataset"] else {}
    texts = load_dataset(corpus, **opts)[split]["text"]
    kind, bs = cfg["kind"], int(cfg["batch_size"])
    blocks = pack_texts(list(texts[:max_texts]), tok, max_length=int(cfg["max_length"]), kind=kind)
    ids = TokenIds.of(tok, vocab_size=getattr(model.config, "vocab_size", None))
    out = []
    for i in range(min(max_batches, -(-blocks.shape[0] // bs))):
        gen = derived_generator(0, "analysis", corpus, i)
        out.append(lm_batch(blocks[i * bs : (i + 1) * bs], kind, ids=ids, generator=gen,
                            mlm_probability=float(cfg["mlm_probability"])))  # fmt: skip
    return out


def _heatmap(report: dict[str, Any], out: Path, plt: Any) -> None:
    matrix = report["loss_matrix"]
    rows, cols = list(matrix), list(report["corpora"])
    grid = [[matrix[r][c] for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 3, 0.42 * len(rows) + 1.5))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="corpus", title="LM loss (same frozen head, same batches)")
    fig.colorbar(im, ax=ax, label="loss")
    fig.tight_layout()
    fig.savefig(out / "loss_matrix.png", dpi=120)
    plt.close(fig)


def write_plots(report: dict[str, Any], out: Path) -> None:
    """``density.png`` (layer x matrix grid), ``overlap.png`` (Jaccard with the random
    expectation), ``loss_matrix.png`` (heatmap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = report["modules"]
    density_grid({label: e["density_per_layer"] for label, e in mods.items()},
                 out / "density.png")  # fmt: skip
    names = list(mods)
    if len(names) > 1:
        jaccard = {a: {b: report["overlap"][a][b]["jaccard"] for b in names if b != a}
                   for a in names}  # fmt: skip
        overlap_heatmap(names, jaccard, {n: mods[n]["density"] for n in names},
                        out / "overlap.png")  # fmt: skip
    if report.get("corpora"):
        _heatmap(report, out, plt)
