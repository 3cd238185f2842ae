"""A trained, frozen LM head for mask learning when the checkpoint ships none.

MiniLM has no MLM head. A head trained *together with* a mask adapts to that mask, so
the mask would be judged with a head no other mask gets (METHODS.md §1.1, issue 12).
Instead the fresh head tensors are trained here on the frozen **dense** model, on a
mix of corpora, until the validation LM loss plateaus; the head is cached (keyed by
base model, corpus mix and warm-up settings), shared by every domain, and frozen
while masks learn. The module never contains it; it is saved beside the module.

Example:
    >>> out = warm_up_head(model, tok, "minilm", "masked_lm", corpora, cfg)  # doctest: +SKIP
    >>> out[1]["curve"][-1]["val_loss"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.data.lm_batches import TokenIds, lm_batch, pack_texts
from modularevo.modules.mask import fingerprint
from modularevo.training.modularize_config import HeadWarmupConfig
from modularevo.utils.atomic import atomic_save_file, atomic_write_text
from modularevo.utils.seed import derived_generator, derived_seed

log = logging.getLogger(__name__)

__all__ = [
    "HEAD_FILE",
    "cache_key",
    "fresh_head_names",
    "init_fresh_head",
    "load_head",
    "warm_up_head",
]

HEAD_FILE = "head.safetensors"
HEAD_FORMAT = "modularevo-head/1"


def fresh_head_names(model: nn.Module) -> list[str]:
    """Head tensors the checkpoint lacked (``load_model`` marks them), tied ones excluded.

    A head weight tied to the input embeddings is never trained: that would move the
    frozen embeddings (METHODS.md §6, pitfall 17).
    """
    fresh = set(getattr(model, "modularevo_fresh_keys", ()) or ())
    groups: dict[tuple[int, int], list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault((p.data_ptr(), p.numel()), []).append(n)
    tied_to_body = {n for g in groups.values() if len(g) > 1 for n in g if not set(g) <= fresh}
    return [n for n, _ in model.named_parameters() if n in fresh and n not in tied_to_body]


def cache_key(model_name: str, model: nn.Module, kind: str, **settings: Any) -> str:
    """Hex key of a warmed-up head: base model (name and body weights), objective, settings.

    The fresh head tensors are left out: they are re-initialised from the seed
    (:func:`init_fresh_head`), so they are part of the settings, not of the weights.
    """
    fresh = set(fresh_head_names(model))
    body = fingerprint((n, p) for n, p in model.named_parameters() if n not in fresh)
    blob = json.dumps([model_name, body, kind, settings], sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def init_fresh_head(model: nn.Module, seed: int) -> None:
    """Re-initialise the fresh head tensors from ``seed`` alone (not the caller's RNG state).

    Uses the model's own ``_init_weights`` on each submodule that holds a fresh tensor,
    under a forked RNG, so the warm-up starts from the same head whatever domain or
    process asks for it.
    """
    names = set(fresh_head_names(model))
    owners = [
        m
        for prefix, m in model.named_modules()
        if (own := [f"{prefix}.{p}" for p, _ in m.named_parameters(recurse=False)])
        and all(n in names for n in own)  # never re-initialise a module with a kept tensor
    ]
    init = getattr(model, "_init_weights", None)
    if init is None:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**31)
        for m in owners:
            init(m)


def load_head(path: str | Path) -> dict[str, Tensor]:
    """The head tensors of a head file."""
    from safetensors.torch import load_file

    return load_file(str(path))


def _corpus_digest(corpora: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, str]:
    """Corpus name -> hash of its train and validation texts (part of the cache key)."""
    out = {}
    for name in sorted(corpora):
        h = hashlib.blake2b(digest_size=8)
        for split in ("train", "validation"):
            for text in corpora[name][split]:
                h.update(text.encode("utf-8", "replace"))
                h.update(b"\0")
        out[name] = h.hexdigest()
    return out


def _blocks(
    corpora: Mapping[str, Mapping[str, Sequence[str]]], tok: Any, kind: str, max_length: int
) -> dict[str, tuple[Tensor, Tensor]]:
    return {
        name: tuple(  # type: ignore[misc]
            pack_texts(list(t[split]), tok, max_length=max_length, kind=kind)
            for split in ("train", "validation")
        )
        for name, t in corpora.items()
    }


def _plateaued(curve: list[dict[str, Any]], cfg: HeadWarmupConfig) -> bool:
    if len(curve) <= cfg.patience:
        return False
    best_before = min(r["val_loss"] for r in curve[: -cfg.patience])
    recent = min(r["val_loss"] for r in curve[-cfg.patience :])
    return recent > best_before * (1 - cfg.plateau_tol)


def warm_up_head(
    model: nn.Module,
    tokenizer: Any,
    model_name: str,
    kind: str,
    corpora: Mapping[str, Mapping[str, Sequence[str]]] | Callable[[], Mapping[str, Any]],
    cfg: HeadWarmupConfig,
    *,
    mix_id: Any = None,
    max_length: int,
    mlm_probability: float = 0.15,
    seed: int = 0,
    sparse_head: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the fresh head tensors of ``model`` on the frozen dense body; cached.

    Args:
        model: the base model; its fresh head tensors are overwritten with the result.
        tokenizer: its tokenizer.
        model_name: the base model's name (part of the cache key).
        kind: LM objective.
        corpora: corpus name -> ``{"train": texts, "validation": texts}``, or a function
            returning that mapping (called only when the head is not cached).
        mix_id: JSON-able identity of the corpus mix for the cache key (e.g. corpus
            names and caps); by default a hash of the texts themselves.
        cfg: warm-up settings.
        max_length: tokens per packed block.
        mlm_probability: masking rate for ``masked_lm``.
        seed: seed of batch order and MLM masking.
        sparse_head: head module name for the scored-tokens-only MLM path.

    Returns:
        (head tensors, report with the validation curve and the cache path). Empty
        when the model has no fresh head tensors.
    """
    names = fresh_head_names(model)
    if not names or cfg.max_steps == 0:
        return {}, {"skipped": "the checkpoint ships its LM head" if not names else "max_steps 0"}
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k != "cache_dir"}
    if mix_id is None:
        corpora = corpora() if callable(corpora) else corpora
        mix_id = _corpus_digest(corpora)
    key = cache_key(model_name, model, kind, mix=mix_id, max_length=max_length,
                    mlm=mlm_probability, seed=seed, head=names, **settings)  # fmt: skip
    folder = Path(cfg.cache_dir) / f"{Path(model_name).name}-{key}"
    params = dict(model.named_parameters())
    if (folder / HEAD_FILE).is_file():
        head = load_head(folder / HEAD_FILE)
        report = json.loads((folder / "curve.json").read_text(encoding="utf-8"))
        log.info("LM head from cache %s (%d steps)", folder, report["steps"])
    else:
        corpora = corpora() if callable(corpora) else corpora
        init_fresh_head(model, derived_seed(seed, "head-init"))
        head, report = _train(model, tokenizer, kind, corpora, cfg, names, max_length,
                              mlm_probability, seed, sparse_head)  # fmt: skip
        report.update({"key": key, "model": model_name, "corpora": sorted(corpora)})
        atomic_save_file(head, folder / HEAD_FILE, metadata={"format": HEAD_FORMAT, "key": key})
        atomic_write_text(folder / "curve.json", json.dumps(report, indent=1))
    with torch.no_grad():
        for n, t in head.items():
            params[n].copy_(t)
    report["path"] = str(folder / HEAD_FILE)
    return head, report


def _features(
    model: nn.Module, rows: Tensor, batch: dict[str, Tensor], prefix: str
) -> tuple[Tensor, Tensor]:
    """Hidden states of the frozen dense body at the scored positions, and their labels."""
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        hidden = getattr(model, prefix)(**inputs)[0]  # (B, T, H)
    scored = batch["labels"] != -100
    return hidden[scored], batch["labels"][scored]  # (n_scored, H), (n_scored,)


def _train(
    model: nn.Module,
    tok: Any,
    kind: str,
    corpora: Mapping[str, Mapping[str, Sequence[str]]],
    cfg: HeadWarmupConfig,
    names: list[str],
    max_length: int,
    mlm_probability: float,
    seed: int,
    sparse_head: str | None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the head on body features computed once (the body is frozen and dense).

    Only the scored-token path of masked LMs is supported here: the body runs once per
    cached batch, then each step costs the head alone.
    """
    if sparse_head is None:
        raise NotImplementedError(
            f"head warm-up is implemented for masked LMs with a separate head; {kind!r} "
            "models with a fresh head are not supported yet"
        )
    ids = TokenIds.of(tok, vocab_size=getattr(getattr(model, "config", None), "vocab_size", None))
    prefix = str(getattr(model, "base_model_prefix", ""))
    blocks = _blocks(corpora, tok, kind, max_length)
    model.eval()  # dense, no dropout: the features are fixed
    feats: dict[str, dict[str, list[tuple[Tensor, Tensor]]]] = {}
    for name, (train, val) in blocks.items():
        feats[name] = {"train": [], "val": []}
        for split, rows, n in (("train", train, cfg.train_batches), ("val", val, cfg.eval_batches)):
            for i in range(min(n, -(-rows.shape[0] // cfg.batch_size))):
                gen = derived_generator(seed, "head", split, name, i)
                part = rows[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                b = lm_batch(part, kind, ids=ids, generator=gen, mlm_probability=mlm_probability)
                feats[name][split].append(_features(model, part, b, prefix))
    head = model.get_submodule(sparse_head)
    params = dict(model.named_parameters())
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    opt = torch.optim.AdamW([params[n] for n in names], lr=cfg.lr, weight_decay=0.0)

    def loss_of(h: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(head(h).float(), y)

    def val_losses() -> dict[str, Any]:
        with torch.no_grad():
            per = {c: sum(float(loss_of(h, y)) for h, y in f["val"]) / len(f["val"])
                   for c, f in feats.items()}  # fmt: skip
        return {"val_loss": sum(per.values()) / len(per), "per_corpus": per}

    curve: list[dict[str, Any]] = [{"step": 0, **val_losses()}]
    order = list(feats)
    step = 0
    for step in range(1, cfg.max_steps + 1):
        cached = feats[order[step % len(order)]]["train"]  # round-robin over the corpora
        i = int(torch.randint(0, len(cached), (1,), generator=derived_generator(seed, "hs", step)))
        loss_of(*cached[i]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            curve.append({"step": step, **val_losses()})
            log.info("head warm-up step %d: val loss %.4f", step, curve[-1]["val_loss"])
            if _plateaued(curve, cfg):
                break
    for p in model.parameters():
        p.requires_grad_(False)
    out = {n: params[n].detach().cpu().contiguous().clone() for n in names}
    report = {"steps": step, "plateaued": _plateaued(curve, cfg), "curve": curve, "names": names,
              "train_tokens_cached": sum(int(h.shape[0]) for f in feats.values()
                                         for h, _ in f["train"])}  # fmt: skip
    return out, report
