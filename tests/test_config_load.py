from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from modularevo.config import apply_overrides, load_config
from modularevo.errors import ConfigError


class Inner(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    weight: float = Field(1.0, ge=0)


class Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    seed: int = 0
    density: float = Field(0.2, gt=0, le=1)
    models: list[Inner] = []


def test_overrides_nested_and_list_index():
    data = {"models": [{"weight": 1.0}, {"weight": 2.0}]}
    out = apply_overrides(data, ["models.1.weight=0.5", "seed=7", "a.b=[1, 2]"])
    assert out["models"][1]["weight"] == 0.5
    assert out["seed"] == 7
    assert out["a"] == {"b": [1, 2]}
    assert data["models"][1]["weight"] == 2.0  # input untouched


def test_all_errors_reported_at_once(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: x\ndensity: 1.5\ncolour: red\nmodels: [{weight: -1}]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Cfg, p)
    problems = exc.value.problems
    assert len(problems) == 4
    text = str(exc.value)
    assert "seed" in text
    assert "density" in text
    assert "colour: unknown key" in text
    assert "models.0.weight" in text


def test_frozen_and_override_applied(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("density: 0.5\n")
    cfg = load_config(Cfg, p, ["density=0.25"])
    assert cfg.density == 0.25
    with pytest.raises(Exception, match="frozen"):
        cfg.density = 0.3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "needle"),
    [("[1, 2]", "must be a mapping"), ("a: [", "not valid YAML")],
)
def test_bad_yaml(tmp_path: Path, content: str, needle: str):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_config(Cfg, p)


def test_missing_file_and_bad_override(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
