"""Learn a domain module: a binary mask over a frozen pretrained model (ModularEvo §1.1).

Loss = the domain's LM loss (causal, MLM or seq2seq by ``config.kind``) + α · the
mask's kept fraction over all covered entries. AdamW updates the scores only; the
model, its LM head included, stays frozen. A checkpoint without an LM head (MiniLM)
first gets one trained on the frozen dense model (:mod:`.head_warmup`, cached and
shared by every domain), so every mask is judged with the same head. Three choices
make the *data*, not the init or the pressure, decide the mask (issue 12):

- the score init ``U[init_low, init_high)`` is seeded from ``(seed, dataset)``, so two
  domains never share it;
- α is calibrated so the pressure on a score equals a quantile of the per-score LM
  gradient (``pressure_quantile``): that share of weights has an LM gradient larger
  than the pressure (the diagnostic is logged at every evaluation and saved);
- the lr warms up, holds its peak until the lowest level falls, then decays; the peak
  is planned so that level falls after ``cross_at`` of the steps (tokens per level saved).

When the kept fraction first falls to a snapshot level, the hard mask is written as
``module-<level>.safetensors`` (the head, if any, is ``head.safetensors`` beside it and
is never part of the module). The test split is never read. Resumable bit-exactly
(:mod:`.modularize_checkpoint`).

Example:
    >>> from modularevo.training.modularize_config import ModularizeConfig
    >>> cfg = ModularizeConfig(model="tiny-bert", dataset="math", steps=50)
    >>> paths = modularize(cfg)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    [0.25, 0.5, 0.75]
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from modularevo.config import apply_overrides, load_config, validate
from modularevo.data import load_dataset
from modularevo.data.lm_batches import TokenIds, lm_batch, pack_texts
from modularevo.errors import InputError
from modularevo.models import load_model
from modularevo.models.arch import describe
from modularevo.modules.io import level_tag, save_module
from modularevo.modules.layers import MaskedModel, MaskScores, maskable_params
from modularevo.modules.mask import ModuleMask, fingerprint
from modularevo.modules.structured import StructuredScores
from modularevo.training import head_warmup
from modularevo.training import modularize_checkpoint as ckpt
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.utils.atomic import atomic_save_file, atomic_write_text
from modularevo.utils.curves import Curves
from modularevo.utils.progress import bar_disable
from modularevo.utils.seed import derived_generator, derived_seed, seed_everything

log = logging.getLogger(__name__)

__all__ = ["build_module", "level_tag", "modularize", "run_seed", "sampled_causal_loss"]

TOKEN_LEVELS = (0.9, 0.75, 0.5, 0.25, 0.1)


@dataclass
class _Run:
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


def build_module(
    masks: Mapping[str, Tensor], model: nn.Module, *, domain: str, metadata: Mapping[str, Any]
) -> ModuleMask:
    """A :class:`ModuleMask` with fingerprints of the masked base parameters."""
    params = dict(model.named_parameters())
    covered = [(n, params[n]) for n in masks]
    return ModuleMask(
        masks=dict(masks),
        domain=domain,
        arch_fingerprint=fingerprint(covered, values=False),
        base_fingerprint=fingerprint(covered),
        metadata=dict(metadata),
    )


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


def _setup(
    cfg: ModularizeConfig,
    model: Any,
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]] | None,
    head_texts: Mapping[str, Mapping[str, Sequence[str]]] | None,
) -> _Run:
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
    return _Run(cfg, acc, model, wrapped, scores, train, val, ids, out, seed, head_report, sparse)


def _batch(run: _Run, step: int) -> dict[str, Tensor]:
    cfg, n = run.cfg, run.train.shape[0]
    start = step * cfg.batch_size
    order = torch.randperm(n, generator=derived_generator(run.seed, "order", start // n))
    idx = order[torch.arange(start, start + cfg.batch_size) % n]
    idx = idx[run.acc.process_index :: run.acc.num_processes]  # this process's share
    gen = derived_generator(run.seed, "mlm", step, run.acc.process_index)
    batch = lm_batch(run.train[idx], cfg.kind, ids=run.ids, generator=gen,
                     mlm_probability=cfg.mlm_probability)  # fmt: skip
    return {k: v.to(run.acc.device) for k, v in batch.items()}


@torch.no_grad()
def _evaluate(run: _Run) -> float:
    cfg = run.cfg
    run.wrapped.eval()
    losses = []
    for i in range(min(cfg.eval_batches, -(-run.val.shape[0] // cfg.batch_size))):
        blocks = run.val[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        gen = derived_generator(0, "val", i)  # the same batches for every seed and domain
        batch = lm_batch(blocks, cfg.kind, ids=run.ids, generator=gen,
                         mlm_probability=cfg.mlm_probability)  # fmt: skip
        batch = {k: v.to(run.acc.device) for k, v in batch.items()}
        losses.append(float(run.wrapped(**batch, sparse_head=run.sparse_head).loss))
    run.wrapped.train()
    return sum(losses) / max(len(losses), 1)


def _score_params(run: _Run) -> list[nn.Parameter]:
    return list(run.scores.parameters())


def sampled_causal_loss(
    model: nn.Module,
    masked: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    n_sampled: int,
    generator: torch.Generator,
) -> Tensor:
    """Causal-LM loss with a sampled softmax: the body runs with ``masked`` parameters,
    the (frozen) head scores only the batch's target ids plus ``n_sampled`` other ids
    drawn uniformly without replacement.

    Each drawn id stands for ``(V - T) / n_sampled`` of the V - T non-target ids, so its
    logit gets ``+log((V - T) / n_sampled)``: an importance-sampled estimate of the
    partition function. With ``n_sampled >= V - T`` this is exactly the full softmax.

    Args:
        model: a causal LM (``base_model_prefix`` body + output embeddings).
        masked: masked parameter tensors by name (others are the model's own).
        batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 = not scored).
        n_sampled: number of non-target ids in the softmax.
        generator: draws the ids (CPU).
    """
    prefix = str(getattr(model, "base_model_prefix", ""))
    body = getattr(model, prefix)
    own = {n[len(prefix) + 1 :]: t for n, t in masked.items() if n.startswith(prefix + ".")}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = functional_call(body, own, (), inputs, strict=False)[0]  # (B, T, H)
    labels = batch["labels"][:, 1:]
    scored = labels != -100
    h, y = hidden[:, :-1][scored], labels[scored]  # (n, H), (n,)
    head: Any = model.get_output_embeddings()  # type: ignore[operator]
    head_name = next(n for n, p in model.named_parameters() if p is head.weight)
    weight = masked.get(head_name, head.weight)  # (V, H)
    vocab = weight.shape[0]
    targets = torch.unique(y)
    is_target = torch.zeros(vocab, dtype=torch.bool)
    is_target[targets.cpu()] = True
    others = (~is_target).nonzero().flatten()
    n = min(n_sampled, others.numel())
    drawn = others[torch.randperm(others.numel(), generator=generator)[:n]].to(y.device)
    cand = torch.cat([targets, drawn])
    logits = (h @ weight[cand].t()).float()  # (n, |cand|)
    bias = getattr(head, "bias", None)
    if isinstance(bias, Tensor):
        logits = logits + bias[cand].float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if n:
        correction = torch.zeros(cand.numel(), device=logits.device)
        correction[targets.numel() :] = math.log(others.numel() / n)
        logits = logits + correction
    position = torch.empty(vocab, dtype=torch.long, device=y.device)
    position[targets] = torch.arange(targets.numel(), device=y.device)
    return nn.functional.cross_entropy(logits, position[y])


def _lm_grads(run: _Run, batch: Mapping[str, Tensor]) -> tuple[float, list[Tensor]]:
    """LM loss and its gradient to every score tensor (the pressure not included)."""
    n_sampled = run.cfg.sampled_softmax
    if n_sampled is not None:
        masked = run.scores.masked_params(dict(run.model.named_parameters()))
        gen = derived_generator(run.seed, "sampled_softmax", run.step)
        out = SimpleNamespace(loss=sampled_causal_loss(run.model, masked, batch, n_sampled, gen))
    else:
        out = run.wrapped(**batch, sparse_head=run.sparse_head)
    params = _score_params(run)
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    return float(out.loss.detach()), [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
    ]


def _unit_pressure(run: _Run) -> list[Tensor]:
    """Gradient of the kept fraction (α = 1) to every score: 1/N for unstructured scores."""
    params = _score_params(run)
    grads = torch.autograd.grad(run.scores.kept_fraction(), params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


def _sample(tensors: Sequence[Tensor], n: int, gen: torch.Generator) -> Tensor:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    if flat.numel() <= n:
        return flat
    return flat[torch.randint(0, flat.numel(), (n,), generator=gen)]


def _lr_multiplier(cfg: ModularizeConfig, step: int, crossed_at: int | None) -> float:
    """lr / peak lr at ``step`` (0-based): linear warm-up, the peak held until the last
    level is crossed, then a linear decay to ``final_lr_ratio`` over the remaining steps.

    Holding the peak guarantees the displacement keeps growing until the lowest level
    falls, even when the LM gradient protects more weights than the calibration predicted.
    """
    warm = max(int(cfg.warmup_ratio * cfg.steps), 1)
    if step < warm:
        return (step + 1) / warm
    if crossed_at is None or step < crossed_at:
        return 1.0
    frac = (step - crossed_at) / max(cfg.steps - crossed_at, 1)
    return 1.0 - (1.0 - cfg.final_lr_ratio) * min(frac, 1.0)


def _planned_area(cfg: ModularizeConfig) -> float:
    """Sum of lr multipliers up to the planned crossing step (peak held until then)."""
    n = max(int(cfg.cross_at * cfg.steps), 1)
    return sum(_lr_multiplier(cfg, t, None) for t in range(n))


def _predicted_displacement(speed: Tensor, cfg: ModularizeConfig, level: float) -> float:
    """Score displacement ``D`` at which the predicted kept fraction reaches ``level``.

    A score moves by about ``lr · speed`` per step under Adam, with ``speed =
    E[g] / sqrt(E[g²])`` of its total gradient; it starts ``U[low, high)``, so it is
    kept after a displacement ``D`` with probability ``(high - D·speed) / (high - low)``.
    """
    lo, hi = cfg.init_low, cfg.init_high

    def kept(d: float) -> float:
        return float(((hi - d * speed) / (hi - lo)).clamp(0, 1).mean())

    a, b = 0.0, 1.0
    while kept(b) > level and b < 1e6:
        b *= 2
    for _ in range(60):
        mid = (a + b) / 2
        a, b = (mid, b) if kept(mid) > level else (a, mid)
    return b


def _calibrated_alpha(ratio: Tensor, cfg: ModularizeConfig) -> float:
    """α whose pressure is the ``pressure_quantile`` quantile of LM-gradient RMS / unit pressure.

    Scores that get no LM gradient at all (a key bias, weights the data never reaches)
    are left out of the quantile: they say nothing about how strong the signal is.

    Raises:
        InputError: if no score gets an LM gradient (the data carries no signal).
    """
    live = ratio[ratio > 0].double()
    if live.numel() == 0:
        raise InputError(
            f"the LM loss of {cfg.dataset!r} gives no gradient to any score, so alpha cannot be "
            "calibrated; check the corpus (constant or empty texts?) or give alpha explicitly"
        )
    return float(torch.quantile(live, cfg.pressure_quantile))


def _calibrate(run: _Run) -> dict[str, Any]:
    """Set the pressure from the LM gradients of the domain and plan the lr."""
    cfg = run.cfg
    unit = _unit_pressure(run)
    s1 = [torch.zeros_like(u) for u in unit]
    s2 = [torch.zeros_like(u) for u in unit]
    run.wrapped.eval()  # no dropout: the calibration is deterministic
    for i in range(cfg.calibration_batches):
        _, grads = _lm_grads(run, _batch(run, -1 - i))
        for a, b, g in zip(s1, s2, grads, strict=True):
            a.add_(g)
            b.add_(g * g)
    run.wrapped.train()
    k = cfg.calibration_batches
    gen = derived_generator(run.seed, "calibration")
    n = 1 << 21
    ratio = _sample([(b / k).sqrt() / u.clamp_min(1e-30) for b, u in zip(s2, unit, strict=True)],
                    n, gen)  # fmt: skip
    alpha = cfg.alpha if cfg.alpha is not None else _calibrated_alpha(ratio, cfg)
    mean = _sample([a / k for a in s1], n, derived_generator(run.seed, "calibration"))
    sq = _sample([b / k for b in s2], n, derived_generator(run.seed, "calibration"))
    press = _sample([alpha * u for u in unit], n, derived_generator(run.seed, "calibration"))
    # with one calibration batch the second moment is an exact square, (press + mean)^2,
    # which rounding can push below zero: clamp before the root (a NaN speed made the
    # planned lr collapse to ~1e-19 on gemma-270m)
    second = (press**2 + 2 * press * mean + sq).clamp_min(0)
    speed = (press + mean) / second.sqrt().clamp_min(1e-30)
    level = cfg.snapshot_levels[-1]
    disp = _predicted_displacement(speed.double(), cfg, level)
    area = _planned_area(cfg)
    lr = cfg.lr if cfg.lr is not None else disp / area
    share = float((sq.sqrt() > press).double().mean())
    out = {"alpha": alpha, "lr": lr, "pressure_per_score": float(press.median()),
           "share_lm_rms_above_pressure": share, "predicted_displacement": disp,
           "calibration_batches": k,
           "planned_cross_step": int(cfg.cross_at * cfg.steps)}  # fmt: skip
    log.info("calibrated: alpha %.4g, lr %.4g, %.1f%% of scores have an LM gradient RMS above "
             "the pressure", alpha, lr, 100 * share)  # fmt: skip
    return out


def _make_optimizer(run: _Run) -> None:
    lr = float(run.calibration["lr"])
    run.opt = torch.optim.AdamW(_score_params(run), lr=lr, weight_decay=0.0)
    run.wrapped, run.opt = run.acc.prepare(run.wrapped, run.opt)


def _last_crossing(run: _Run) -> int | None:
    last = run.crossed.get(level_tag(run.cfg.snapshot_levels[-1]))
    return int(last["step"]) if last else None


def _alpha_at(run: _Run, step: int) -> float:
    """α at ``step``: the calibrated value, grown by ``alpha_growth`` per step once the
    planned crossing step has passed without the lowest level falling (a safeguard for
    weights the LM gradient protects more than predicted; 1.0 turns it off)."""
    late = step - int(run.calibration["planned_cross_step"])
    crossed = _last_crossing(run)
    if crossed is not None:
        late = crossed - int(run.calibration["planned_cross_step"])
    return float(run.calibration["alpha"]) * run.cfg.alpha_growth ** max(late, 0)


def _step(run: _Run, step: int, unit: list[Tensor]) -> float:
    lr = float(run.calibration["lr"]) * _lr_multiplier(run.cfg, step, _last_crossing(run))
    for group in run.opt.param_groups:
        group["lr"] = lr
    loss, grads = _lm_grads(run, _batch(run, step))
    alpha = _alpha_at(run, step)
    above = 0
    total = 0
    for p, g, u in zip(_score_params(run), grads, unit, strict=True):
        press = alpha * u
        above += int((g.abs() > press).sum())
        total += g.numel()
        p.grad = (g + press).clamp_(-1.0, 1.0)  # the reference's STE clip
    run.share_sum += above / max(total, 1)
    run.share_n += 1
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss


def _hard_kept(run: _Run) -> float:
    masks = run.scores.hard_masks()
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / max(sum(m.numel() for m in masks.values()), 1)


def _snapshot(run: _Run, level: float, kept: float, val_loss: float) -> Path:
    tag = level_tag(level)
    tokens = run.step * run.cfg.batch_size * run.cfg.max_length
    info = {"level": level, "step": run.step, "kept": kept, "val_loss": val_loss,
            "tokens": tokens}  # fmt: skip
    meta: dict[str, Any] = {
        **info, "kind": run.cfg.kind, "model": run.cfg.model, "structured": run.cfg.structured,
        "seed": run.cfg.seed, "run_seed": run.seed, "calibration": run.calibration,
        "head": head_warmup.HEAD_FILE if "path" in run.head_report else None,
        "config": run.cfg.model_dump(mode="json"),
    }  # fmt: skip
    if run.cfg.structured:
        units = run.scores.unit_masks()
        meta["units"] = {
            u: "".join("1" if b else "0" for b in m.tolist()) for u, m in units.items()
        }
    module = build_module(run.scores.hard_masks(), run.model, domain=run.cfg.dataset,
                          metadata=meta)  # fmt: skip
    path = save_module(module, run.out / f"module-{tag}.safetensors")
    run.crossed[tag] = {**info, "path": str(path)}
    log.info("kept %.4f <= %.2f at step %d (%d tokens): wrote %s", kept, level, run.step,
             tokens, path)  # fmt: skip
    return path


def _checkpoint(run: _Run) -> None:
    if not run.acc.is_main_process:
        return
    state = {
        "config": run.cfg.model_dump(mode="json"), "step": run.step,
        "crossed": json.dumps(run.crossed), "history": json.dumps(run.history),
        "calibration": json.dumps(run.calibration),
        "share": [run.share_sum, run.share_n],
        "scores": run.scores.state_dict(), "opt": run.opt.state_dict(),
        "rng": ckpt.rng_state(),
    }  # fmt: skip
    ckpt.save_checkpoint(state, run.out / "checkpoint.pt")


def _resume(run: _Run) -> bool:
    state = ckpt.load_checkpoint(run.out / "checkpoint.pt", run.cfg.model_dump(mode="json"))
    if state is None:
        return False
    run.scores.load_state_dict(state["scores"])
    run.calibration = json.loads(state["calibration"])
    _make_optimizer(run)
    run.opt.load_state_dict(state["opt"])
    run.step = int(state["step"])
    run.crossed, run.history = json.loads(state["crossed"]), json.loads(state["history"])
    run.share_sum, run.share_n = float(state["share"][0]), int(state["share"][1])
    ckpt.restore_rng(state["rng"])
    log.info("resumed from %s at step %d", run.out / "checkpoint.pt", run.step)
    return True


def _after_step(run: _Run, loss: float) -> bool:
    """Evaluate, snapshot and checkpoint after ``run.step``; True when training should stop."""
    cfg = run.cfg
    kept = _hard_kept(run)
    tokens = run.step * cfg.batch_size * cfg.max_length
    record: dict[str, float] = {"step": run.step, "tokens": tokens, "loss": loss, "kept": kept,
                                "lr": float(run.opt.param_groups[0]["lr"]),
                                "alpha": _alpha_at(run, run.step - 1)}  # fmt: skip
    due = [lv for lv in cfg.snapshot_levels if kept <= lv and level_tag(lv) not in run.crossed]
    if due or run.step % cfg.eval_every == 0 or run.step == cfg.steps:
        record["val_loss"] = _evaluate(run)
        record["share_lm_grad_above_pressure"] = run.share_sum / max(run.share_n, 1)
        run.share_sum, run.share_n = 0.0, 0
        log.info("step %d: kept %.4f, val loss %.4f, %.1f%% of scores with |LM grad| > "
                 "pressure", run.step, kept, record["val_loss"],
                 100 * record["share_lm_grad_above_pressure"])  # fmt: skip
    if run.acc.is_main_process:
        for lv in due:
            _snapshot(run, lv, kept, record["val_loss"])
    run.history.append(record)
    if run.step % cfg.checkpoint_every == 0:
        _checkpoint(run)
    return cfg.stop_after_last_level and level_tag(cfg.snapshot_levels[-1]) in run.crossed


def modularize(
    config: ModularizeConfig | str | Path,
    *,
    overrides: Sequence[str] = (),
    model: nn.Module | None = None,
    tokenizer: Any = None,
    texts: Mapping[str, Sequence[str]] | None = None,
    head_texts: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> dict[float, Path]:
    """Learn one domain module and write a module file per snapshot level crossed.

    Args:
        config: the run's :class:`ModularizeConfig`, or a YAML file (``modularize("m.yaml")``).
        overrides: ``key=value`` overrides applied to ``config`` (e.g. ``["steps=40"]``).
        model: a model to use instead of loading ``config.model`` (tests, notebooks).
        tokenizer: its tokenizer (required with ``model``).
        texts: ``{"train": [...], "validation": [...]}`` instead of ``config.dataset``.
        head_texts: corpus name -> texts for the head warm-up mix, instead of loading
            ``config.head_warmup.corpora``.

    Returns:
        Snapshot level -> module file, for every level the kept fraction reached.

    Raises:
        InputError: unknown model or dataset, a corpus too small for one block, a
            model with nothing to mask, or a checkpoint of another config.
    """
    t0 = time.perf_counter()
    config = as_modularize_config(config, overrides)
    run = _setup(config, model, tokenizer, texts, head_texts)
    if not _resume(run):
        run.calibration = _calibrate(run)
        _make_optimizer(run)
        run.history.append({"step": 0, "tokens": 0, "val_loss": _evaluate(run), "kept": 1.0})
    unit = _unit_pressure(run)
    bar = tqdm(total=config.steps, initial=run.step, disable=bar_disable(config.progress),
               desc=f"modularize {config.dataset}")  # fmt: skip
    curves = Curves(run.out, "modularize", tracker=config.tracker,
                    enabled=run.acc.is_main_process)  # fmt: skip
    for row in run.history:  # a resumed run redraws its earlier steps
        _log_curves(curves, row)
    run.wrapped.train()
    while run.step < config.steps:
        loss = _step(run, run.step, unit)
        run.step += 1
        bar.update(1)
        stop = _after_step(run, loss)
        _log_curves(curves, run.history[-1])
        bar.set_postfix(loss=f"{loss:.3f}", kept=f"{run.history[-1]['kept']:.3f}")
        if stop:
            break
    bar.close()
    curves.close(title=f"modularize {config.dataset} ({config.model})")
    _checkpoint(run)
    _write_summary(run, time.perf_counter() - t0)
    return {v["level"]: Path(v["path"]) for v in run.crossed.values()}


def as_modularize_config(
    config: ModularizeConfig | str | Path, overrides: Sequence[str] = ()
) -> ModularizeConfig:
    """A :class:`ModularizeConfig` from a config object or a YAML path, plus overrides.

    Raises:
        ConfigError: a missing file, unknown keys or invalid values (one message each).
    """
    if isinstance(config, ModularizeConfig):
        if not overrides:
            return config
        data = apply_overrides(config.model_dump(mode="json"), list(overrides))
        return validate(ModularizeConfig, data)
    return load_config(ModularizeConfig, config, list(overrides))


def _log_curves(curves: Curves, row: Mapping[str, Any]) -> None:
    """Train loss, validation loss (when evaluated) and the kept fraction of one step."""
    names = {"loss": "train/loss", "val_loss": "val/loss", "kept": "mask/kept_fraction"}
    curves.log({new: row.get(old) for old, new in names.items()}, int(row["step"]))


def tokens_per_level(history: Sequence[Mapping[str, float]]) -> dict[str, int | None]:
    """Tokens seen when the kept fraction first fell to each of :data:`TOKEN_LEVELS`."""
    out: dict[str, int | None] = {}
    for lv in TOKEN_LEVELS:
        hit = next((r for r in history if "kept" in r and r["kept"] <= lv and r["step"] > 0), None)
        out[level_tag(lv)] = int(hit["tokens"]) if hit else None
    return out


def _write_summary(run: _Run, seconds: float) -> None:
    if not run.acc.is_main_process:
        return
    summary = {
        "config": run.cfg.model_dump(mode="json"),
        "run_seed": run.seed,
        "calibration": run.calibration,
        "head_warmup": run.head_report,
        "snapshots": run.crossed,
        "tokens_per_level": tokens_per_level(run.history),
        "steps_run": run.step,
        "seconds": seconds,
        "masked_tensors": len(run.scores.names()),
        "history": run.history,
    }
    atomic_write_text(run.out / "modularize.json", json.dumps(summary, indent=1))
