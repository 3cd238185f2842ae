"""Structured extraction: physically remove the FFN neurons and heads a module drops.

A *structured* module keeps or drops whole units:

- FFN neuron ``j`` of a layer = row ``j`` of each up projection (weight and bias)
  and column ``j`` of the down projection;
- attention head ``h`` = rows ``h*d:(h+1)*d`` of q, k, v (weights and biases) and
  the same columns of the output projection; under grouped-query attention (Llama,
  Qwen, Gemma with fewer key/value heads than query heads) the unit removed is a whole
  key/value group: key/value head ``g`` (rows of k and v) with its query heads
  ``g*G .. (g+1)*G - 1`` (rows of q, columns of the output projection). A group is
  dropped when its v rows are masked or all its query heads are; a query head dropped
  inside a kept group stays, with zero output columns (per-head structured modules).

A unit is *dropped* when its output is exactly zero in the masked model: the down
column (o columns) are all masked, or an up row with its bias (v rows with bias)
is all masked (activations with ``act(0) = 0``: GELU, ReLU, SiLU). A unit is
*kept* when every entry of its slices is kept. Anything else, and any other
masked tensor with masked-out entries, is unstructured; :func:`extract_module`
rejects it unless ``strict=False``, in which case those zeros are baked into the
smaller model. Either way the smaller model's logits equal the masked model's.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.deploy import hf_pruned
from modularevo.deploy.hf_pruned import FAMILY_SPECS
from modularevo.deploy.plan import ExtractPlan, plan_extraction
from modularevo.errors import InputError
from modularevo.evaluation.cards import write_model_card
from modularevo.modules.mask import ModuleMask
from modularevo.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

REMOTE_CODE_FILE = "modeling_modularevo_pruned.py"


def _index(n: int, hd: int, keep: list[int]) -> Tensor:
    heads = torch.tensor(keep, dtype=torch.long)
    return (heads[:, None] * hd + torch.arange(hd)).flatten() if hd else heads


def sliced_state_dict(model: nn.Module, module: ModuleMask, plan: ExtractPlan) -> dict[str, Tensor]:
    """The masked model's state dict with dropped rows/columns removed."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for n, m in module.masks.items():
        sd[n] = sd[n] * m.to(sd[n].dtype)
    spec = FAMILY_SPECS[plan.family][1]
    hd = hf_pruned.head_dim_of(model.config)  # type: ignore[attr-defined]
    for i, lp in enumerate(plan.layers):
        pre = f"{plan.blocks}.{i}"
        cols = _index(lp.head_total, hd, lp.head_keep)
        kv_cols = _index(lp.head_total // lp.group, hd, lp.kv_keep)
        ffn = _index(lp.ffn_total, 0, lp.ffn_keep)
        _select(sd, f"{pre}.{spec.q}", 0, cols)
        for p in (spec.k, spec.v):
            _select(sd, f"{pre}.{p}", 0, kv_cols)
        sd[f"{pre}.{spec.o}.weight"] = sd[f"{pre}.{spec.o}.weight"].index_select(1, cols)
        for p in spec.up:
            _select(sd, f"{pre}.{p}", 0, ffn)
        sd[f"{pre}.{spec.down}.weight"] = sd[f"{pre}.{spec.down}.weight"].index_select(1, ffn)
    return sd


def _select(sd: dict[str, Tensor], prefix: str, dim: int, idx: Tensor) -> None:
    sd[f"{prefix}.weight"] = sd[f"{prefix}.weight"].index_select(dim, idx).contiguous()
    if f"{prefix}.bias" in sd:
        sd[f"{prefix}.bias"] = sd[f"{prefix}.bias"].index_select(0, idx).contiguous()


def _keep_one(plan: ExtractPlan, module: ModuleMask, model: nn.Module) -> ModuleMask:
    """Layers left with no head keep head 0 (key/value group 0 under GQA) with zeroed
    output columns (exactly zero)."""
    spec = FAMILY_SPECS[plan.family][1]
    masks = dict(module.masks)
    hd = hf_pruned.head_dim_of(model.config)  # type: ignore[attr-defined]
    params = dict(model.named_parameters())
    for i, lp in enumerate(plan.layers):
        if lp.head_keep:
            continue
        lp.head_keep = list(range(lp.group))
        name = f"{plan.blocks}.{i}.{spec.o}.weight"
        m = masks.get(name, torch.ones_like(params[name], dtype=torch.bool)).clone()
        m[:, : hd * lp.group] = False
        masks[name] = m
    return ModuleMask(masks=masks, domain=module.domain, metadata=module.metadata)


def extract_module(model: nn.Module, module: ModuleMask, *, strict: bool = True) -> nn.Module:
    """Build a smaller model of ``model``'s family without the units ``module`` drops.

    Args:
        model: a transformers model (BERT/MiniLM, GPT-Neo or Llama-like), unmasked.
        module: a structured mask over ``model``'s parameters.
        strict: reject masks with zeros outside whole units (else bake them in).

    Returns:
        A ``Pruned<Class>`` model in eval mode whose logits equal those of
        ``model`` with ``module`` applied.

    Raises:
        InputError: for an unsupported family or an unstructured mask.
    """
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and type(model).__name__ not in _all_pruned_names():
        return _extract_wrapped(model, backbone, module, strict=strict)
    plan = plan_extraction(model, module, strict=strict)
    module = _keep_one(plan, module, model)
    cls = _pruned_class(model, plan.family)
    cfg = pruned_config(model.config, plan)  # type: ignore[attr-defined]
    sd = sliced_state_dict(model, module, plan)
    new = cls(cfg)
    new.load_state_dict(sd, strict=True)
    log.info("extracted %s: ffn %s heads %s", cls.__name__, plan.ffn_sizes, plan.head_counts)
    return new.eval()


def _all_pruned_names() -> set[str]:
    return {n for _, classes in hf_pruned.PRUNED_CLASSES.values() for n in classes}


def _extract_wrapped(
    model: nn.Module, backbone: nn.Module, module: ModuleMask, *, strict: bool
) -> nn.Module:
    """A wrapper (``model.backbone`` + head, e.g. SequenceClassifier): prune the backbone."""
    inner = {
        n.removeprefix("backbone."): m for n, m in module.masks.items() if n.startswith("backbone.")
    }
    outer = {n: m for n, m in module.masks.items() if not n.startswith("backbone.")}
    if strict:
        for n, m in outer.items():
            if not bool(m.all()):
                raise InputError(
                    f"module mask is not structured: {n!r} has {int((~m).sum())} masked-out "
                    "entries outside the backbone's FFN neurons and heads; pass strict=False "
                    "to bake them in"
                )
    small = extract_module(backbone, ModuleMask(masks=inner), strict=strict)
    new = copy.deepcopy(model)
    new.backbone = small
    new.config = small.config  # type: ignore[attr-defined]
    ModuleMask(masks=outer).apply_(dict(new.named_parameters()))
    return new.eval()


def _pruned_class(model: nn.Module, family: str) -> type:
    name = type(model).__name__.removeprefix("Pruned")
    classes = hf_pruned.PRUNED_CLASSES[family][1]
    if name not in classes:
        raise InputError(
            f"no pruned class for {type(model).__name__}; supported: {sorted(classes)}"
        )
    return classes[name]


def pruned_config(config: object, plan: ExtractPlan) -> object:
    """A ``Pruned<Family>Config`` copying ``config`` plus the per-layer shape."""
    cfg_cls = hf_pruned.PRUNED_CLASSES[plan.family][0]
    d = copy.deepcopy(config.to_dict())  # type: ignore[attr-defined]
    d.pop("model_type", None)
    d.update(ffn_sizes=plan.ffn_sizes, head_counts=plan.head_counts)
    return cfg_cls.from_dict(d)


def save_extracted(
    model: nn.Module,
    out: str | Path,
    *,
    tokenizer: object = None,
    overwrite: bool = False,
    source: tuple[str, str] | None = None,
) -> Path:
    """Save a pruned model as a HF folder that ``from_pretrained`` reloads, atomically.

    With ``source`` = (model it was extracted from, module file), the folder gets a model
    card naming both, the kept units and the size.

    The folder holds ``modeling_modularevo_pruned.py`` (a copy of :mod:`.hf_pruned`) and
    an ``auto_map``: with modularevo installed it loads without ``trust_remote_code``;
    elsewhere ``trust_remote_code=True`` executes that copy (check it first; docs/deploy.md).
    """
    cls = type(getattr(model, "backbone", model)).__name__
    cfg: Any = model.config
    mod = REMOTE_CODE_FILE.removesuffix(".py")
    cfg.auto_map = {
        "AutoConfig": f"{mod}.{type(cfg).__name__}",
        hf_pruned.auto_class_name(cls.removeprefix("Pruned")): f"{mod}.{cls}",
    }
    cfg.architectures = [cls]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)  # type: ignore[attr-defined]
        shutil.copyfile(hf_pruned.__file__, tmp / REMOTE_CODE_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]
        if source is not None:
            _card(model, tmp, *source)
    return Path(out)


def _card(model: nn.Module, folder: Path, base: str, module: str) -> None:
    cfg: Any = model.config
    params = sum(p.numel() for p in model.parameters())
    ffn, heads = getattr(cfg, "ffn_sizes", "?"), getattr(cfg, "head_counts", "?")
    write_model_card(
        folder,
        title=f"Module of {Path(base).name} extracted as a smaller model",
        summary=(
            f"The FFN neurons and attention heads outside the structured module `{module}` "
            f"were removed from `{base}`: {params:,} parameters remain, FFN sizes per layer "
            f"{ffn}, heads per layer {heads}. "
            f"The folder carries `{REMOTE_CODE_FILE}` (the pruned model class); with modularevo "
            "installed it loads without running that file."
        ),
        base_model=base,
        command=f"modularevo extract {module} --model {base} --out OUT",
        tags=["module-extraction", "pruned"],
    )


hf_pruned.register_auto_classes()
