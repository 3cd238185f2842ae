"""A generation task beside a classification task in `evolve`, on the tiny random decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from evolve_helpers import fake_config, tiny_corpus, tiny_task

from generation_helpers import PAIRS, pairs_dataset
from modularevo.config import load_config
from modularevo.evolution import evolve
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.lm_template import LMTemplate
from modularevo.evolution.state import RunDir
from modularevo.models.load import load_model

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = ["base", "single_task", "modularevo", "ft_task_arithmetic"]


def test_lm_template_names_match_the_classifier_backbone():
    lm, _ = load_model("tiny-gptneo", "causal_lm")
    clf, _ = load_model("tiny-gptneo", "classifier", num_labels=3)
    template = LMTemplate(lm)
    shared = {k: v for k, v in clf.state_dict().items() if k.startswith("backbone.")}
    assert set(template.state_dict()) == set(shared)  # tied LM head: the embedding, once
    for k, v in template.state_dict().items():
        assert torch.equal(v, shared[k]), k
    with torch.no_grad():  # writes through to the wrapped LM
        template.backbone.wte.weight.add_(1.0)
    assert torch.equal(lm.get_output_embeddings().weight, template.backbone.wte.weight)


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = {"pairs": pairs_dataset(repeat=4), "ta": tiny_task("ta", seed=1)}
    texts = {"da": tiny_corpus("abcdefgh", seed=3), "db": tiny_corpus("abcdef", seed=4)}
    cfg = fake_config(
        tmp_path_factory.mktemp("gen") / "evo",
        model="tiny-gptneo",
        tasks=["pairs", "ta"],
        domains={"pairs": "da", "ta": "db"},
        rounds=1,
        strategies=STRATEGIES,
        finetune={
            "max_steps": 60,
            "batch_size": 6,
            "max_length": 32,
            "eval_every": 30,
            "lr": 1e-2,
            "weight_decay": 0.0,
            "patience": None,
            "generation": {"max_new_tokens": 8},
        },
        plots=False,
    )
    return evolve(cfg, datasets=data, texts=texts)


def test_generation_task_runs_through_every_strategy(gen_run: Path):
    run = RunDir(gen_run)
    base = run.read_record("base", 0).scores["pairs"]["validation"]
    single = run.read_record("single_task", 1).scores["pairs"]["validation"]
    assert base["accuracy"] == 0.0  # the untouched LM does not know the pairs: the control
    assert single["accuracy"] == 1.0  # fine-tuned with the answer loss, greedy exact match
    assert single["predictions"] == [a for _, a in PAIRS]
    for name in STRATEGIES:
        rec = run.read_record(name, 0 if name == "base" else 1)
        for task in ("pairs", "ta"):
            s = rec.scores[task]["test"]
            hits = np.asarray(s["predictions"]) == np.asarray(s["labels"])
            assert s["accuracy"] == pytest.approx(hits.mean()), (name, task)
        assert isinstance(rec.scores["pairs"]["test"]["predictions"][0], str)
        assert isinstance(rec.scores["ta"]["test"]["predictions"][0], int)
    merged = run.read_record("ft_task_arithmetic", 1)
    assert merged.search["evaluations"] >= 2  # the λ search scored the generation task too
    mod = json.loads(
        (gen_run / "finetunes" / "r1" / "base-pairs-module" / "summary.json").read_text()
    )
    assert mod["mask"]["out_of_mask_changed"] == 0
    rep = json.loads((gen_run / "report" / "report.json").read_text())
    assert {"pairs", "ta"} <= set(rep["table_test"][0])
    final = load_model(str(gen_run / "final" / "ft_task_arithmetic" / "model"), "causal_lm")[0]
    assert final.config.model_type == "gpt_neo"  # the first task is the generation task


def test_tiny_generation_config_pairs_a_generation_and_a_classification_task():
    cfg = load_config(EvolveConfig, REPO / "configs" / "evolve" / "tiny_generation.yaml")
    from modularevo.data import DATASETS

    kinds = {DATASETS.get(t).kind for t in cfg.tasks}
    assert kinds == {"generation", "task"}
    assert cfg.model == "tiny-gptneo"


@pytest.mark.slow
def test_tiny_generation_config_runs_on_registered_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped config end to end: builds code-name, lang-id and their corpora (minutes)."""
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = REPO / "configs" / "evolve" / "tiny_generation.yaml"
    over = [f"output_dir={tmp_path / 'run'}", "progress=false", "rounds=1"]
    root = evolve(cfg, overrides=over)
    rec: Any = RunDir(root).read_record("ft_ties", 1)
    assert rec.scores["code-name"]["test"]["n"] == 16
    assert all(isinstance(p, str) for p in rec.scores["code-name"]["test"]["predictions"])
    assert (root / "report" / "report.md").is_file()
