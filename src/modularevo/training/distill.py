"""Distillation from a dense fine-tuned teacher: logit KL plus hidden-state MSE.

The student (an extracted module, or a gated model) keeps the teacher's depth and hidden
size, so block ``i`` of the student is matched with block ``i`` of the teacher::

    loss = ce_weight * CE(student, labels)
         + kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
         + hidden_weight * mean over matched blocks of MSE(student block out, teacher block out)

(Hinton et al. 2015 for the T^2-scaled KL; hidden-state matching as in TinyBERT, Jiao et al.
2020, arXiv:1909.10351, without a projection since the widths agree). The MSE averages over
non-padding tokens only. In eval mode the wrapper runs the student alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.models.arch import describe
from modularevo.training.recovery_config import DistillConfig

__all__ = ["DistillConfig", "Distiller", "distill_terms"]


def distill_terms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    student_hidden: Sequence[Tensor],
    teacher_hidden: Sequence[Tensor],
    *,
    temperature: float,
    attention_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(T^2-scaled KL of the logits, mean hidden-state MSE over non-padding tokens).

    Both are exactly zero when the student's tensors equal the teacher's.
    """
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.detach() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    mse = student_logits.new_zeros(())
    if student_hidden:
        for s, h in zip(student_hidden, teacher_hidden, strict=True):
            sq = (s - h.detach()).pow(2).mean(-1)  # (batch, seq)
            if attention_mask is not None and attention_mask.shape == sq.shape:
                w = attention_mask.to(sq.dtype)
                mse = mse + (sq * w).sum() / w.sum().clamp_min(1)
            else:
                mse = mse + sq.mean()
        mse = mse / len(student_hidden)
    return kl, mse


class _Capture:
    """Forward hooks that record the outputs of chosen blocks, only while ``active``.

    Outside a :class:`Distiller` step the hooks record nothing: a model that served as
    a student or teacher (and is evaluated, timed or taught again by a new Distiller)
    does not accumulate block outputs.
    """

    def __init__(self, model: nn.Module, picked: list[str]) -> None:
        modules = dict(model.named_modules())
        missing = [n for n in picked if n not in modules]
        if missing:
            raise InputError(
                f"the student has no block {missing[0]!r} of the teacher; distillation matches "
                "blocks by name (an extracted module keeps its teacher's names)"
            )
        self.outputs: list[Tensor] = []
        self.active = False
        self.handles = [modules[n].register_forward_hook(self._hook) for n in picked]

    def _hook(self, _mod: nn.Module, _args: Any, out: Any) -> None:
        if self.active:
            self.outputs.append(out[0] if isinstance(out, tuple) else out)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.outputs = [], []

    def take(self) -> list[Tensor]:
        out, self.outputs = self.outputs, []
        return out


class Distiller(nn.Module):
    """``student`` trained against a frozen ``teacher``; ``forward(**batch)`` as the student.

    Args:
        student: the model being trained (its ``forward(**batch)`` returns ``.loss``/``.logits``).
        teacher: the dense fine-tuned model (frozen, eval mode, not saved with the student).
        cfg: the weights and the temperature.
        student_core: where the student's blocks live (a gated model's inner model);
            default ``student``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        cfg: DistillConfig,
        *,
        student_core: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.student, self.cfg = student, cfg
        self.last_terms: dict[str, float] = {}
        teacher.requires_grad_(False).eval()
        self._teacher = [teacher]  # a list: not a submodule, so not in state dicts
        core = student_core if student_core is not None else student
        names = list(describe(teacher).layers)  # the student's shapes may defeat inference
        picked = names if cfg.layers is None else [names[i] for i in cfg.layers if i < len(names)]
        if cfg.layers is not None and len(picked) != len(cfg.layers):
            raise InputError(f"distill.layers {cfg.layers} but the teacher has {len(names)} blocks")
        on = cfg.hidden_weight > 0
        self._capture = {
            "student": _Capture(core, picked) if on else None,
            "teacher": _Capture(teacher, picked) if on else None,
        }

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher."""
        return self._teacher[0]

    def _apply(self, fn: Any, recurse: bool = True) -> Distiller:
        super()._apply(fn, recurse)
        self._teacher[0]._apply(fn, recurse)  # .to(device) moves the teacher too
        return self

    def close(self) -> None:
        """Remove the hooks from the student and the teacher (the wrapper is done)."""
        for cap in self._capture.values():
            if cap is not None:
                cap.remove()

    def forward(self, **batch: Any) -> Any:
        """The student's output; training replaces ``loss`` by the distillation loss."""
        if not self.training:
            return self.student(**batch)
        cap_s, cap_t = self._capture["student"], self._capture["teacher"]
        caps = [c for c in (cap_s, cap_t) if c is not None]
        for cap in caps:
            cap.take()
            cap.active = True
        try:
            out = self.student(**batch)
            with torch.no_grad():
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                t_out = self.teacher(**inputs)
        finally:
            for cap in caps:
                cap.active = False
        s_hidden = cap_s.take() if cap_s is not None else []
        t_hidden = cap_t.take() if cap_t is not None else []
        if len(s_hidden) != len(t_hidden):
            raise InputError(
                f"student and teacher gave {len(s_hidden)} and {len(t_hidden)} block outputs; "
                "distillation matches blocks one to one (same depth)"
            )
        if s_hidden and s_hidden[0].shape != t_hidden[0].shape:
            raise InputError(
                f"hidden states differ in shape: student {tuple(s_hidden[0].shape)}, teacher "
                f"{tuple(t_hidden[0].shape)}; set distill.hidden_weight: 0"
            )
        kl, mse = distill_terms(out.logits, t_out.logits, s_hidden, t_hidden,
                                temperature=self.cfg.temperature,
                                attention_mask=batch.get("attention_mask"))  # fmt: skip
        cfg = self.cfg
        loss = cfg.kl_weight * kl + cfg.hidden_weight * mse
        if getattr(out, "loss", None) is not None and "labels" in batch:
            # out.loss = CE (+ a gated student's density penalty, which keeps weight 1)
            ce = F.cross_entropy(out.logits, batch["labels"])
            loss = loss + out.loss + (cfg.ce_weight - 1.0) * ce
        self.last_terms = {"kl": float(kl.detach()), "hidden_mse": float(mse.detach())}
        out.loss = loss
        return out
