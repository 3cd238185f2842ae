"""A modularization run's state and its setup: model, corpus, frozen head, scores.

:func:`setup_run` loads the model and the domain corpus, warms up (or reuses) a missing
LM head (:mod:`.head_warmup`), builds the mask scores seeded from :func:`run_seed`, and
packs the corpus into blocks; :func:`make_optimizer` adds AdamW over the scores at the
calibrated lr. The loop itself is :func:`modularevo.training.modularizer.modularize`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from modularevo.data import load_dataset
from modularevo.data.lm_batches import TokenIds, pack_texts
from modularevo.errors import InputError
from modularevo.models import load_model
from modularevo.models.arch import describe
from modularevo.modules.layers import MaskedModel, MaskScores, maskable_params
from modularevo.modules.structured import StructuredScores
from modularevo.training import head_warmup
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.utils.atomic import atomic_save_file, atomic_write_text
from modularevo.utils.seed import derived_generator, derived_seed, seed_everything

log = logging.getLogger(__name__)


@dataclass
class ModularizeRun:
    """A modularization run: its config, model, scores, data, and the state a resume restores."""

    cfg: ModularizeConfig
    acc: Accelerator
    model: nn.Module
    wrapped: nn.Module
    scores: Any
    train: Tensor  # (num_blocks, max_length)
    val: Tensor
    ids: TokenIds
    out: Path
    seed: int
    head_report: dict[str, Any]
    sparse_head: str | None = None
    opt: Any = None
    calibration: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    crossed: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    share_sum: float = 0.0
    share_n: int = 0


def run_seed(config: ModularizeConfig) -> int:
    """The seed of a run's score init, batch order and masking: derived from (seed, dataset)."""
    return derived_seed(config.seed, "modularize", config.dataset) % 2**62


def _build_scores(
    model: nn.Module, arch: Any, cfg: ModularizeConfig, generator: torch.Generator
) -> nn.Module:
    params = dict(model.named_parameters())
    init = (cfg.init_low, cfg.init_high)
    if cfg.structured:
        scores: nn.Module = StructuredScores(arch, params, init_range=init, generator=generator)
    else:
        names = maskable_params(model, arch.maskable, bias=cfg.mask_bias)
        scores = MaskScores({n: params[n].shape for n in names}, init_range=init,
                            generator=generator)  # fmt: skip
    if not scores.names():  # type: ignore[operator]
        raise InputError(
            f"model {cfg.model!r} has no maskable layers (family {arch.family!r}); "
            "check `describe(model)` or use another model"
        )
    return scores


def _load(cfg: ModularizeConfig, model: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    if model is not None:
        return model, tokenizer
    return load_model(cfg.model, cfg.kind)


def _corpus(
    name: str, cfg: ModularizeConfig, texts: Mapping[str, Sequence[str]] | None, cap: int | None
) -> dict[str, list[str]]:
    if texts is None:
        opts = cfg.dataset_options if name == cfg.dataset else {}
        dsd = load_dataset(name, **opts)
        texts = {"train": dsd["train"]["text"], "validation": dsd["validation"]["text"]}
    return {"train": list(texts["train"])[:cap],
            "validation": list(texts["validation"])[: cfg.max_val_texts]}  # fmt: skip


def _sparse_head_name(model: nn.Module, arch: Any, kind: str) -> str | None:
    prefix = getattr(model, "base_model_prefix", "")
    if kind == "masked_lm" and len(arch.heads) == 1 and prefix and hasattr(model, prefix):
        return arch.heads[0]  # vocabulary projection only on scored tokens
    return None


def _prepare_head(
    cfg: ModularizeConfig,
    model: nn.Module,
    tok: Any,
    own: Mapping[str, Sequence[str]],
    texts_given: bool,
    head_texts: Mapping[str, Mapping[str, Sequence[str]]] | None,
    sparse: str | None,
) -> dict[str, Any]:
    """Warm up (or reuse) the frozen LM head; write it beside the modules."""
    out = Path(cfg.output_dir)
    saved = out / head_warmup.HEAD_FILE
    params = dict(model.named_parameters())
    if saved.is_file():  # a resumed run keeps the head it started with
        with torch.no_grad():
            for n, t in head_warmup.load_head(saved).items():
                params[n].copy_(t)
        return json.loads((out / "head_warmup.json").read_text(encoding="utf-8"))
    hw = cfg.head_warmup
    names = list(hw.corpora or (cfg.dataset,))

    def load() -> dict[str, Any]:
        corpora = dict(head_texts or {})
        for name in names:
            if name not in corpora:
                given = texts_given and name == cfg.dataset
                corpora[name] = own if given else _corpus(name, cfg, None, None)
        return {n: {"train": list(t["train"])[: hw.max_train_texts],
                    "validation": list(t["validation"])[: cfg.max_val_texts]}
                for n, t in corpora.items()}  # fmt: skip

    # corpora loaded by name are identified by name and caps (no need to read them when cached)
    by_name = head_texts is None and not (texts_given and cfg.dataset in names)
    mix_id = ({"names": sorted(names), "max_train_texts": hw.max_train_texts,
               "max_val_texts": cfg.max_val_texts} if by_name else None)  # fmt: skip
    head, report = head_warmup.warm_up_head(
        model, tok, cfg.model, cfg.kind, load, hw, mix_id=mix_id, max_length=cfg.max_length,
        mlm_probability=cfg.mlm_probability, seed=cfg.seed, sparse_head=sparse,
    )  # fmt: skip
    if head:
        meta = {"format": head_warmup.HEAD_FORMAT, "key": str(report.get("key", ""))}
        atomic_save_file(head, saved, metadata=meta)
        atomic_write_text(out / "head_warmup.json", json.dumps(report, indent=1))
    return report


def setup_run(
    cfg: ModularizeConfig,
    model: Any,
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]] | None,
    head_texts: Mapping[str, Mapping[str, Sequence[str]]] | None,
) -> ModularizeRun:
    """Seed, load the model and corpus, prepare the frozen head and build the scores."""
    seed = run_seed(cfg)
    seed_everything(seed % 2**31)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model, tok = _load(cfg, model, tokenizer)
    arch = describe(model)
    sparse = _sparse_head_name(model, arch, cfg.kind)
    own = _corpus(cfg.dataset, cfg, texts, cfg.max_train_texts)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    head_report: dict[str, Any] = {"skipped": "the checkpoint ships its LM head"}
    if head_warmup.fresh_head_names(model):
        head_report = _prepare_head(cfg, model, tok, own, texts is not None, head_texts, sparse)
    scores = _build_scores(model, arch, cfg, derived_generator(seed, "scores"))
    wrapped = MaskedModel(model, scores, trainable=())  # the head is frozen too
    ids = TokenIds.of(tok, vocab_size=getattr(model.config, "vocab_size", None))
    pack = {"max_length": cfg.max_length, "kind": cfg.kind}
    train, val = pack_texts(own["train"], tok, **pack), pack_texts(own["validation"], tok, **pack)
    log.info("masking %d tensors; head: %s", len(scores.names()),  # type: ignore[operator]
             head_report.get("path", head_report.get("skipped")))  # fmt: skip
    return ModularizeRun(
        cfg, acc, model, wrapped, scores, train, val, ids, out, seed, head_report, sparse
    )


def score_params(run: ModularizeRun) -> list[nn.Parameter]:
    """The trainable parameters of the run: its mask scores."""
    return list(run.scores.parameters())


def make_optimizer(run: ModularizeRun) -> None:
    """AdamW over the scores at the calibrated lr, prepared by Accelerate."""
    lr = float(run.calibration["lr"])
    run.opt = torch.optim.AdamW(score_params(run), lr=lr, weight_decay=0.0)
    run.wrapped, run.opt = run.acc.prepare(run.wrapped, run.opt)
