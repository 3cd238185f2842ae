"""Learned structured modules: hard-concrete (L0) gates over FFN neurons and attention heads.

One gate per FFN neuron (it multiplies the neuron's activation, the input of the down
projection) and per attention head (it multiplies the head's context, the input of the
output projection): a dropped unit's output is exactly zero, as in a structured module, so
the learned mask feeds :func:`modularevo.deploy.extract.extract_module` directly.

Gates follow Louizos et al. 2018 (arXiv:1712.01312): ``z = clamp(sigmoid((log u - log(1-u)
+ log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)`` with ``u ~ U(0, 1)`` while training;
``P(z > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))`` is the expected kept fraction.
The density target ``t`` ramps linearly from 1 to the target over the first
``warmup_fraction`` of the steps; the loss gains, per unit kind (FFN neurons, heads), with
``d`` the expected kept fraction, either ``w * (d - t)^2`` (``penalty: w``, the default; on
a tiny model it settles on the target within 0.01, tests/deploy/test_gates.py) or, with
``penalty: null``, the Lagrangian of CoFi (Xia et al. 2022, arXiv:2204.00408)
``lambda1 * (d - t) + lambda2 * (d - t)^2`` with the lambdas *maximised* (their gradient is
reversed). Measured on the tiny test task, the Lagrangian overshot the target (0.1 for 0.25)
and stayed there within 200 steps; hence the default.

In eval mode the gates are deterministic and exactly at the target density: the
``round(density * n)`` units with the largest ``log_alpha`` are kept (per layer, or per
kind over all layers with ``per_layer: false``), each scaled by its deterministic gate
value; :func:`GatedModel.finalize` folds those values into the down / output projection
columns, so the plain model computes what the gated one does, and :meth:`StructuredGates.module`
is the structured :class:`ModuleMask` to extract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.models.arch import ArchInfo, describe
from modularevo.modules.mask import ModuleMask
from modularevo.modules.structured import structured_segments
from modularevo.training.recovery_config import GatesConfig

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
_EPS = 1e-6

__all__ = ["GatedModel", "GatesConfig", "StructuredGates", "unit_module"]


def _key(unit: str) -> str:
    return unit.replace(".", "__").replace(":", "--")


def _kind(unit: str) -> str:
    return "ffn" if unit.startswith("ffn:") else "heads"


class StructuredGates(nn.Module):
    """Hard-concrete gates over a model's FFN neurons and attention heads.

    Args:
        arch: ``describe(model)``.
        params: the model's named parameters.
        cfg: the gates' options.
        total_steps: training steps of the run (the target ramp).
        init: unit group -> initial log_alpha per unit (default ``cfg.init_log_alpha``).
    """

    step: Tensor

    def __init__(
        self,
        arch: ArchInfo,
        params: Mapping[str, Tensor],
        cfg: GatesConfig,
        *,
        total_steps: int,
        init: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.total_steps = cfg, max(1, total_steps)
        units, _ = structured_segments(arch, params)
        self.units = dict(units)
        self.log_alpha = nn.ParameterDict()
        for u, n in units.items():
            start = (init or {}).get(u)
            value = start.float().clone() if start is not None else torch.full((n,), 0.0)
            if start is None:
                value += cfg.init_log_alpha
            self.log_alpha[_key(u)] = nn.Parameter(value)
        self.kinds = sorted({_kind(u) for u in units})
        # lambda1, lambda2 per kind; maximised: the hook flips their gradient
        self.lambdas = nn.Parameter(torch.zeros(len(self.kinds), 2))
        self.lambdas.register_hook(lambda g: -g)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.targets = {"ffn": cfg.ffn_density, "heads": cfg.head_density}
        self.sites = _sites(arch)

    # -- gate values -------------------------------------------------------------
    def alpha(self, unit: str) -> Tensor:
        """``log_alpha`` of one unit group."""
        return self.log_alpha[_key(unit)]

    def sample(self, unit: str) -> Tensor:
        """A training-time gate vector (hard-concrete sample)."""
        la = self.alpha(unit)
        u = torch.rand_like(la).clamp(_EPS, 1 - _EPS)
        s = torch.sigmoid((u.log() - (1 - u).log() + la) / BETA)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def keep(self) -> dict[str, Tensor]:
        """Unit group -> bool of the units the final module keeps (exactly at the density)."""
        out: dict[str, Tensor] = {}
        if self.cfg.per_layer:
            for u in self.units:
                out[u] = _top(self.alpha(u).detach(), self.targets[_kind(u)])
            return out
        for kind in self.kinds:
            group = [u for u in self.units if _kind(u) == kind]
            flat = _top(torch.cat([self.alpha(u).detach() for u in group]), self.targets[kind])
            for u, part in zip(group, flat.split([self.units[u] for u in group]), strict=True):
                out[u] = part
        return out

    def deterministic(self) -> dict[str, Tensor]:
        """Unit group -> eval-time gate values (0 outside :meth:`keep`)."""
        keep = self.keep()
        out = {}
        for u in self.units:
            z = (torch.sigmoid(self.alpha(u).detach()) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
            out[u] = z * keep[u]
        return out

    def expected_density(self) -> dict[str, Tensor]:
        """Kind -> mean P(gate > 0) over its units (differentiable)."""
        shift = BETA * math.log(-GAMMA / ZETA)
        out = {}
        for kind in self.kinds:
            probs = [torch.sigmoid(self.alpha(u) - shift) for u in self.units if _kind(u) == kind]
            out[kind] = torch.cat(probs).mean()
        return out

    def target(self, kind: str) -> float:
        """This step's target density of ``kind`` (ramps from 1 over the warm-up)."""
        warm = self.cfg.warmup_fraction * self.total_steps
        frac = 1.0 if warm <= 0 else min(1.0, float(self.step) / warm)
        return 1.0 - (1.0 - self.targets[kind]) * frac

    def penalty(self) -> Tensor:
        """The Lagrangian term of this step: sum over kinds of l1*(d-t) + l2*(d-t)^2."""
        dens = self.expected_density()
        total = self.lambdas.new_zeros(())
        for i, kind in enumerate(self.kinds):
            gap = dens[kind] - self.target(kind)
            if self.cfg.penalty is not None:
                total = total + self.cfg.penalty * gap * gap
                continue
            total = total + self.lambdas[i, 0] * gap + self.lambdas[i, 1] * gap * gap
        return total

    def module(self, model: nn.Module, *, domain: str = "gates") -> ModuleMask:
        """The structured module of :meth:`keep` over ``model``'s parameters."""
        return unit_module(describe(model), dict(model.named_parameters()), self.keep(),
                           domain=domain)  # fmt: skip


def _top(scores: Tensor, density: float) -> Tensor:
    k = round(density * scores.numel())
    keep = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        keep[scores.topk(k).indices] = True
    return keep


def _sites(arch: ArchInfo) -> dict[str, tuple[str, int, bool]]:
    """Unit group -> (module whose *input* the gates scale, unit width, transposed)."""
    out = {f"ffn:{f.layer}": (f.down, 1, arch.is_transposed(f.down)) for f in arch.ffn}
    for a in arch.attention:
        key = f"heads:{a.layer}:{a.kind}" if a.kind != "self" else f"heads:{a.layer}"
        out[key] = (a.o, int(a.head_dim), arch.is_transposed(a.o))
    return out


def unit_module(
    arch: ArchInfo, params: Mapping[str, Tensor], keep: Mapping[str, Tensor], *, domain: str
) -> ModuleMask:
    """A structured :class:`ModuleMask` keeping the units ``keep`` marks (group -> bool)."""
    _, plan = structured_segments(arch, params)
    masks: dict[str, Tensor] = {}
    for name, segs in plan.items():
        shape = tuple(params[name].shape)
        dim = segs[0].dim
        vec = torch.ones(shape[dim], dtype=torch.bool)
        for seg in segs:
            part = keep[seg.unit].bool().repeat_interleave(seg.unit_size)
            vec[seg.offset : seg.offset + part.numel()] = part
        view = [1] * len(shape)
        view[dim] = -1
        masks[name] = vec.view(view).expand(shape).clone()
    return ModuleMask(masks=masks, domain=domain, metadata={"units": "hard-concrete gates"})


def init_from_module(arch: ArchInfo, module: ModuleMask, cfg: GatesConfig) -> dict[str, Tensor]:
    """Initial log_alpha per unit group: ``init_log_alpha`` where ``module`` keeps the unit's
    output column(s) whole, ``init_drop`` where it drops them, linear in between."""
    out = {}
    for unit, (name, width, transposed) in _sites(arch).items():
        m = module.masks.get(f"{name}.weight")
        if m is None:
            continue
        cols = m.float().mean(1 if transposed else 0)
        frac = cols.view(-1, width).mean(1)
        out[unit] = cfg.init_drop + (cfg.init_log_alpha - cfg.init_drop) * frac
    if not out:
        raise InputError(
            "gates.init_module masks no FFN down projection or attention output projection of "
            "this model; learn the domain module on the same base model"
        )
    return out


class GatedModel(nn.Module):
    """A classifier whose FFN neurons and heads pass through :class:`StructuredGates`.

    ``forward(**batch)`` returns the model's output; while training, the gates are sampled
    and ``loss`` gains the density penalty. In eval mode the gates are the final module's.
    """

    def __init__(self, model: nn.Module, gates: StructuredGates) -> None:
        super().__init__()
        self.model, self.gates = model, gates
        modules = dict(model.named_modules())
        self._hooks = []
        for unit, (name, width, _) in gates.sites.items():
            if unit in gates.units:
                hook = modules[name].register_forward_pre_hook(self._gate_hook(unit, width))
                self._hooks.append(hook)
        self._eval_cache: dict[str, Tensor] | None = None

    @classmethod
    def wrap(
        cls, model: nn.Module, cfg: GatesConfig, *, total_steps: int, init_module: Any = None
    ) -> GatedModel:
        """Gate ``model`` (its units from :func:`describe`); ``init_module`` a ModuleMask."""
        arch = describe(model)
        params = dict(model.named_parameters())
        init = init_from_module(arch, init_module, cfg) if init_module is not None else None
        return cls(model, StructuredGates(arch, params, cfg, total_steps=total_steps, init=init))

    def _gate_hook(self, unit: str, width: int) -> Any:
        def hook(_mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            if self.training:
                z = self.gates.sample(unit)
            else:
                if self._eval_cache is None:
                    self._eval_cache = self.gates.deterministic()
                z = self._eval_cache[unit]
            x = args[0]
            return (x * z.repeat_interleave(width).to(x.dtype), *args[1:])

        return hook

    def train(self, mode: bool = True) -> GatedModel:
        """Switch modes; the eval gates are recomputed after any training."""
        self._eval_cache = None
        return super().train(mode)

    def forward(self, **batch: Any) -> Any:
        """The model's output; training adds the density penalty to ``loss``."""
        out = self.model(**batch)
        if self.training and getattr(out, "loss", None) is not None:
            out.loss = out.loss + self.gates.penalty()
            self.gates.step += 1
        return out

    def finalize(self) -> tuple[nn.Module, ModuleMask]:
        """Fold the eval gates into the weights, remove the hooks, return (model, module).

        The returned model (no gates) computes the gated model's eval-mode outputs; the
        module marks the units it keeps, for :func:`~modularevo.deploy.extract.extract_module`.
        """
        z = self.gates.deterministic()
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for unit, (name, width, transposed) in self.gates.sites.items():
                if unit not in z:
                    continue
                w = cast(Tensor, modules[name].weight)
                scale = z[unit].repeat_interleave(width).to(w.dtype)
                w.mul_(scale[:, None] if transposed else scale[None, :])
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.model, self.gates.module(self.model)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups of the gates (no weight decay; multipliers only when used)."""
        cfg = self.gates.cfg
        groups: list[dict[str, Any]] = [
            {"params": list(self.gates.log_alpha.parameters()), "lr": cfg.lr, "weight_decay": 0.0}
        ]
        if cfg.penalty is None:
            groups.append(
                {"params": [self.gates.lambdas], "lr": cfg.lambda_lr, "weight_decay": 0.0}
            )
        return groups

    def density(self) -> dict[str, float]:
        """Kind -> expected kept fraction now (training-time gates)."""
        return {k: float(v.detach()) for k, v in self.gates.expected_density().items()}
