"""EvolveConfig validation and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modularevo.config import load_config
from modularevo.errors import ConfigError
from modularevo.evolution.config import EvolveConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "evolve"


def test_defaults_and_errors() -> None:
    cfg = EvolveConfig(tasks=["math-type"])
    assert cfg.rounds == 3
    assert cfg.search.densities == (0.25, 0.5)
    for bad in (
        {"tasks": ["a"], "strategies": ["modular_evo"]},
        {"tasks": ["a", "a"]},
        {"tasks": ["a"], "domains": {"b": "law"}},
        {"tasks": ["a"], "jobs": 0},
        {"tasks": ["a"], "search": {"densities": [1.5]}},
    ):
        with pytest.raises(ValueError):
            EvolveConfig.model_validate(bad)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(EvolveConfig, path)
    assert cfg.tasks


def test_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("tasks: [a]\nroundz: 2\n")
    with pytest.raises(ConfigError, match="roundz"):
        load_config(EvolveConfig, p)


def test_quickstart_yaml_mirrors_the_builtin_settings() -> None:
    from modularevo.evolution.quickstart import quickstart_config

    from_yaml = load_config(EvolveConfig, CONFIGS / "quickstart.yaml")
    builtin = quickstart_config(tasks=list(from_yaml.tasks))
    assert from_yaml == builtin


def test_finetune_options_are_a_partial_finetune_config() -> None:
    from modularevo.evolution.config import JOB_KEYS, EvolveFinetune
    from modularevo.training.finetune_config import FinetuneConfig

    cfg = EvolveConfig.model_validate({"tasks": ["a"], "finetune": {"lr": 1e-4, "max_steps": 7}})
    assert isinstance(cfg.finetune, FinetuneConfig)  # one schema, one default per knob
    defaults = FinetuneConfig.model_validate({"model": "m", "task": "t", "strategy": "full"})
    for key in ("eval_every", "patience", "warmup_steps", "eval_at_start", "weight_decay"):
        assert getattr(cfg.finetune, key) == getattr(defaults, key), key
    job = cfg.finetune.for_job({"model": "m", "task": "t", "seed": 3, "output_dir": "x"})
    assert type(job) is FinetuneConfig
    assert (job.lr, job.max_steps, job.seed) == (1e-4, 7, 3)
    with pytest.raises(ValueError, match=r"finetune\.task is set per job"):
        EvolveFinetune.model_validate({"task": "a"})
    with pytest.raises(ValueError, match="max_stepz"):  # no pass-through around the schema
        EvolveFinetune.model_validate({"max_stepz": 3})
    with pytest.raises(ValueError, match="lr"):  # validated on the way into a job too
        cfg.finetune.for_job({"model": "m", "task": "t", "lr": -1.0})
    assert "seed" in JOB_KEYS
    assert "lr" not in JOB_KEYS
    # a config dumped to JSON (a worker process, config.resolved.yaml) validates again
    assert EvolveConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_all_strategies_come_from_the_registry_and_new_keys_validate() -> None:
    from modularevo.evolution.config import ALL_STRATEGIES
    from modularevo.evolution.strategies import STRATEGIES

    assert set(ALL_STRATEGIES) == set(STRATEGIES.names())
    assert "modularevo_random" in ALL_STRATEGIES
    with pytest.raises(ValueError, match="retention_tasks"):
        EvolveConfig.model_validate({"tasks": ["a"], "retention_tasks": ["a"]})
    with pytest.raises(ValueError, match="gate_min_gain"):
        EvolveConfig.model_validate({"tasks": ["a"], "strategies": ["base"], "gate_min_gain": 8})
