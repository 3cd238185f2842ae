"""Every YAML under configs/ validates against the schema of its stage (no weights read)."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from modularevo.config import load_config
from modularevo.cost.config import CostConfig
from modularevo.emoe.config import EMoEConfig
from modularevo.evolution.config import EvolveConfig
from modularevo.merging.recipe import MergeConfig
from modularevo.mwt.config import MwTConfig
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.pretrain import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS: dict[str, type[BaseModel]] = {
    "cost": CostConfig,
    "emoe": EMoEConfig,
    "evolve": EvolveConfig,
    "finetune": FinetuneConfig,
    "merge": MergeConfig,
    "modularize": ModularizeConfig,
    "mwt": MwTConfig,
    "pretrain": PretrainConfig,
}
FILES = sorted(CONFIGS.rglob("*.yaml"))


def test_every_config_folder_has_a_schema():
    assert FILES, "no shipped configs found"
    unknown = {p.relative_to(CONFIGS).parts[0] for p in FILES} - set(SCHEMAS)
    assert not unknown, f"config folders without a schema in this test: {unknown}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates(path: Path):
    schema = SCHEMAS[path.relative_to(CONFIGS).parts[0]]
    cfg = load_config(schema, path)
    assert isinstance(cfg, schema)
