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
