from pathlib import Path

import pytest
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer
from typer.testing import CliRunner

from modularevo.cli.main import app
from modularevo.config import load_config
from modularevo.training.finetune_config import FinetuneConfig

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "finetune").glob("*.yaml"))


def test_there_is_a_config_per_minilm_task_and_strategy():
    names = {p.stem for p in CONFIGS}
    for task in ("math-type", "legal-category", "lang-id", "code-package"):
        for strategy in ("module", "full", "lora"):
            assert f"minilm_{task}_{strategy}" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path):
    cfg = load_config(FinetuneConfig, path)
    assert cfg.strategy in path.stem or path.stem == "tiny_test"
    assert path.read_text().startswith("# HF_HUB_OFFLINE=1 ")


def test_finetune_cli_runs_a_config(tmp_path, monkeypatch):
    import modularevo.data as data_pkg
    import modularevo.models.load as load_pkg

    monkeypatch.setattr(data_pkg, "load_dataset", lambda name: tiny_dataset())
    monkeypatch.setattr(load_pkg, "load_model",
                        lambda *a, **k: (tiny_classifier(), tiny_tokenizer()))  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\ntask: tiny\nstrategy: full\nmax_steps: 4\nbatch_size: 8\n")
    res = CliRunner().invoke(app, ["finetune", str(cfg), f"output_dir={tmp_path / 'o'}",
                                   "progress=false", "eval_every=2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "test acc" in res.output
    assert (tmp_path / "o" / "metrics.json").is_file()
