"""The pressure α and the lr plan of a modularization run, calibrated from the data.

:func:`calibrate` sets α so that the pressure on a score equals the
``pressure_quantile`` quantile of the per-score LM gradient, and plans the peak lr so
that the lowest snapshot level falls after ``cross_at`` of the steps;
:func:`lr_multiplier` and :func:`alpha_at` give the schedule of both over the steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError
from modularevo.modules.io import level_tag
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularize_objective import lm_grads, train_batch, unit_pressure
from modularevo.training.modularize_setup import ModularizeRun
from modularevo.utils.seed import derived_generator

log = logging.getLogger(__name__)


def _sample(tensors: Sequence[Tensor], n: int, gen: torch.Generator) -> Tensor:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    if flat.numel() <= n:
        return flat
    return flat[torch.randint(0, flat.numel(), (n,), generator=gen)]


def lr_multiplier(cfg: ModularizeConfig, step: int, crossed_at: int | None) -> float:
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
    return sum(lr_multiplier(cfg, t, None) for t in range(n))


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


def calibrate(run: ModularizeRun) -> dict[str, Any]:
    """Set the pressure from the LM gradients of the domain and plan the lr."""
    cfg = run.cfg
    unit = unit_pressure(run)
    s1 = [torch.zeros_like(u) for u in unit]
    s2 = [torch.zeros_like(u) for u in unit]
    run.wrapped.eval()  # no dropout: the calibration is deterministic
    for i in range(cfg.calibration_batches):
        _, grads = lm_grads(run, train_batch(run, -1 - i))
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


def last_crossing(run: ModularizeRun) -> int | None:
    """The step at which the lowest snapshot level was crossed, or None."""
    last = run.crossed.get(level_tag(run.cfg.snapshot_levels[-1]))
    return int(last["step"]) if last else None


def alpha_at(run: ModularizeRun, step: int) -> float:
    """α at ``step``: the calibrated value, grown by ``alpha_growth`` per step once the
    planned crossing step has passed without the lowest level falling (a safeguard for
    weights the LM gradient protects more than predicted; 1.0 turns it off)."""
    late = step - int(run.calibration["planned_cross_step"])
    crossed = last_crossing(run)
    if crossed is not None:
        late = crossed - int(run.calibration["planned_cross_step"])
    return float(run.calibration["alpha"]) * run.cfg.alpha_growth ** max(late, 0)
