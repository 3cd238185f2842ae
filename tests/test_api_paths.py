"""The Python API takes what the CLI takes: YAML paths, overrides, embedded model names."""

from __future__ import annotations

from pathlib import Path

import pytest

from modularevo.errors import ConfigError
from modularevo.merging.recipe import embedded_model_paths, load_merge_config
from modularevo.models.defaults import MODELS
from modularevo.training.finetune import as_finetune_config
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularizer import as_modularize_config

ROOT = Path(__file__).resolve().parents[1]
FINETUNE = ROOT / "configs" / "finetune" / "tiny_test.yaml"
MODULARIZE = ROOT / "configs" / "modularize" / "tiny_test.yaml"


@pytest.mark.parametrize("kind", [str, Path])
def test_finetune_config_from_a_path_with_overrides(kind):
    cfg = as_finetune_config(kind(FINETUNE), ["max_steps=3", "tracker=none"])
    assert isinstance(cfg, FinetuneConfig)
    assert (cfg.model, cfg.max_steps, cfg.tracker) == ("tiny-bert", 3, "none")
    again = as_finetune_config(cfg, ["seed=5"])
    assert (again.seed, again.max_steps) == (5, 3)
    assert as_finetune_config(cfg) is cfg


def test_modularize_config_from_a_path_with_overrides():
    cfg = as_modularize_config(str(MODULARIZE), ["steps=4"])
    assert isinstance(cfg, ModularizeConfig)
    assert (cfg.model, cfg.steps) == ("tiny-bert", 4)


def test_bad_paths_and_keys_are_user_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        as_finetune_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no_such_key"):
        as_modularize_config(MODULARIZE, ["no_such_key=1"])


def test_modularize_takes_text_column_as_the_data_errors_promise():
    cfg = ModularizeConfig.model_validate({"dataset": "corpus.jsonl", "text_column": "body"})
    assert cfg.dataset_options == {"text_column": "body"}
    kept = ModularizeConfig.model_validate(
        {"dataset": "c.csv", "dataset_options": {"text_column": "a"}, "text_column": None}
    )
    assert kept.dataset_options == {"text_column": "a"}


def test_embedded_names_become_their_folders_in_a_recipe():
    recipe = {"merge_method": "task_arithmetic", "base_model": "tiny-bert",
              "models": [{"model": "tiny-bert", "parameters": {"weight": 1.0}}, {"other": 1}],
              "slices": [{"sources": [{"model": "tiny-bert", "layer_range": [0, 1]}]}]}  # fmt: skip
    out = embedded_model_paths(recipe)
    folder = str(MODELS.get("tiny-bert").locate())
    assert out["base_model"] == folder
    assert out["models"][0]["model"] == folder
    assert out["models"][1] == {"other": 1}
    assert out["slices"][0]["sources"][0]["model"] == folder
    assert recipe["base_model"] == "tiny-bert"  # the caller's recipe is left alone
    assert (Path(folder) / "config.json").is_file()


def test_a_local_folder_wins_over_an_embedded_name(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-bert").mkdir()
    assert embedded_model_paths({"base_model": "tiny-bert"})["base_model"] == "tiny-bert"


def test_a_merge_recipe_takes_an_embedded_base_model(tmp_path: Path):
    cfg, _ = load_merge_config({"merge_method": "task_arithmetic", "base_model": "tiny-bert",
                                "models": [{"model": str(tmp_path)}]})  # fmt: skip
    assert cfg.base_model == str(MODELS.get("tiny-bert").locate())


def test_finetune_and_modularize_run_from_a_yaml_path(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from modularevo import finetune, modularize

    res = finetune(str(FINETUNE), overrides=[f"output_dir={tmp_path / 'ft'}", "max_steps=2",
                                             "eval_every=1", "tracker=none",
                                             "progress=false"])  # fmt: skip
    assert res.metrics["steps"] == 2
    assert (tmp_path / "ft" / "curves.png").is_file()
    assert not (tmp_path / "ft" / "tensorboard").exists()
    modularize(MODULARIZE, overrides=[f"output_dir={tmp_path / 'mod'}", "steps=2",
                                      "eval_every=1", "max_train_texts=40", "max_val_texts=8",
                                      "progress=false", "tracker=none"])  # fmt: skip
    assert (tmp_path / "mod" / "curves.png").is_file()
