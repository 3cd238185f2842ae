"""Driver of ``modularevo cost``: load dense model + module variant, measure, report."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from rich.table import Table
from torch import nn

from modularevo.cost.config import CostConfig
from modularevo.cost.meter import cpu_name, measure_cost, token_inputs
from modularevo.cost.report import cost_json, cost_table, plot_cost
from modularevo.deploy.extract import extract_module
from modularevo.deploy.sparse import sparsify_linears
from modularevo.errors import InputError
from modularevo.models.load import load_model
from modularevo.modules.io import load_module
from modularevo.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


def load_any_model(name_or_path: str, kind: str, num_labels: int | None) -> tuple[nn.Module, Any]:
    """Load a HF folder saved with a ``*ForSequenceClassification`` class as-is, else
    through :func:`modularevo.models.load.load_model`."""
    folder = Path(name_or_path)
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        archs = json.loads(cfg_file.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in archs):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            tok = (
                AutoTokenizer.from_pretrained(folder)
                if (folder / "tokenizer.json").is_file()
                else None
            )
            return model, tok
    return load_model(name_or_path, kind, num_labels=num_labels)


def module_variant(dense: nn.Module, cfg: CostConfig) -> tuple[str, nn.Module, Path]:
    """(label, model, path on disk) for ``cfg.module``: extracted folder, structured
    module file (extracted now) or unstructured module file (sparse kernels)."""
    path = Path(str(cfg.module))
    if path.is_dir():
        model, _ = load_any_model(str(path), cfg.kind, cfg.num_labels)
        return "module (extracted)", model, path
    mask = load_module(path, params=dense.named_parameters(), allow_modified=True)
    try:
        return "module (extracted)", extract_module(dense, mask), path
    except InputError as exc:
        log.warning("module is not structured (%s); measuring the sparse path", exc)
    sparse = copy.deepcopy(dense)
    sparsify_linears(sparse, mask, layout=cfg.sparse_layout)
    return f"module ({cfg.sparse_layout} sparse)", sparse, path


def _check_paths(cfg: CostConfig) -> None:
    """Name missing local paths (``runs/...`` folders a benchmark creates) before loading."""
    problems = []
    for key in ("model", "module"):
        value = getattr(cfg, key)
        if value is None or Path(str(value)).exists():
            continue
        text = str(value)
        if key == "module" or text.startswith(("runs/", "./", "../", "/")):
            problems.append(f"{key}={text!r} does not exist")
    if problems:
        raise InputError(
            f"{'; '.join(problems)}. The shipped configs/cost files point at folders that "
            "`python benchmarks/bench_deploy.py` creates; run it first, or pass your own: "
            "`modularevo cost CONFIG model=RUN/model module=MODULE.safetensors`"
        )


def run_cost(cfg: CostConfig) -> tuple[Table, Path]:
    """Measure the dense model and (if given) the module, interleaved; write JSON + plot.

    Raises:
        InputError: a model or module path that does not exist (checked before any load).
    """
    _check_paths(cfg)
    dense, _ = load_any_model(cfg.model, cfg.kind, cfg.num_labels)
    models: dict[str, nn.Module] = {"dense": dense}
    disk: dict[str, Any] = {"dense": cfg.model if Path(cfg.model).exists() else None}
    if cfg.module:
        label, mod, path = module_variant(dense, cfg)
        models[label], disk[label] = mod, path
    vocab = int(getattr(dense.config, "vocab_size", 1000))  # type: ignore[union-attr]
    reports = measure_cost(
        models, token_inputs(vocab), batch_sizes=cfg.batch_sizes, seq_lens=cfg.seq_lens,
        repeats=cfg.repeats, warmup=cfg.warmup, disk_paths=disk, threads=cfg.threads,
    )  # fmt: skip
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"cpu": cpu_name(), "threads": cfg.threads, "config": cfg.model_dump()}
    atomic_write_text(out / "cost.json", cost_json(reports, extra))
    plot_cost(reports, out / "cost.png")
    return cost_table(reports), out
