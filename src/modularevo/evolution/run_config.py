"""An evolution run's resolved config, and whether a folder holds the same run.

:func:`write_config` writes ``config.resolved.yaml`` and ``run_info.json``, refusing a
folder whose saved config computes something else: keys that only change display,
scheduling or the folder may differ, and strategies (and variants) may be added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modularevo.config import apply_overrides, load_config, validate
from modularevo.errors import InputError
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.state import RunDir
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.runinfo import run_info


def as_config(
    config: EvolveConfig | str | Path, overrides: list[str] | None = None
) -> EvolveConfig:
    """An :class:`EvolveConfig` from a config object or a YAML path plus overrides."""
    if isinstance(config, EvolveConfig):
        if overrides:
            data = apply_overrides(config.model_dump(mode="json"), overrides)
            return validate(EvolveConfig, data)
        return config
    return load_config(EvolveConfig, config, overrides)


# Keys that change how a run is shown, scheduled or where it lives, never what it
# computes: a resumed run may differ in them (e.g. started with progress bars, resumed
# with --no-progress, or from a folder that was moved).
_DISPLAY_KEYS = ("progress", "stage_progress", "jobs", "tracker", "output_dir")


# Keys a resumed run may extend: strategies (and variants) added to a run compute
# beside the ones it has; every existing record stays valid.
_EXTENDABLE_KEYS = ("strategies", "variants")


def write_config(cfg: EvolveConfig, run: RunDir) -> None:
    """Write ``config.resolved.yaml`` and ``run_info.json``; refuse a folder of another run."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    path = run.root / "config.resolved.yaml"
    if path.is_file() and not _same_run(yaml.safe_load(path.read_text("utf-8")), cfg):
        raise InputError(
            f"{str(run.root)!r} holds a run with another config (config.resolved.yaml differs "
            "in more than added strategies or variants); choose another output_dir, or delete "
            "the folder to start over"
        )
    atomic_write_text(path, text)
    run.write_json("run_info.json", run_info(cfg.seed))


def _results_config(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that change no result (the curves' tracker), so
    a run started before such a key existed resumes."""
    out = {k: v for k, v in data.items() if k != "tracker"}
    if isinstance(out.get("finetune"), dict):
        out["finetune"] = {k: v for k, v in out["finetune"].items() if k != "tracker"}
    return out


def _same_run(saved: Any, cfg: EvolveConfig) -> bool:
    """Whether a saved resolved config describes the same computation as ``cfg``."""
    if not isinstance(saved, dict):
        return False
    try:  # through today's schema, so keys added since (with their defaults) compare equal
        saved = type(cfg).model_validate(saved).model_dump(mode="json")
    except ValueError:
        return False
    saved, now = _results_config(saved), _results_config(cfg.model_dump(mode="json"))
    keep = [k for k in {*saved, *now} if k not in _DISPLAY_KEYS + _EXTENDABLE_KEYS]
    if not all(saved.get(k) == now.get(k) for k in keep):
        return False
    old_variants, new_variants = saved.get("variants") or {}, now.get("variants") or {}
    kept = all(new_variants.get(k) == v for k, v in old_variants.items())
    return kept and set(saved.get("strategies") or []) <= set(now.get("strategies") or [])
