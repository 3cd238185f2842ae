"""The modularizer loop on tiny random models: density control, snapshots, resume, heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from modularevo.models import load_model
from modularevo.modules.io import load_module
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularizer import modularize

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "two",
    "dogs",
    "ran",
    "far",
    "away",
    "from",
    "home",
]


def _texts(n: int = 120) -> dict[str, list[str]]:
    g = torch.Generator().manual_seed(0)
    rows = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (12,), generator=g))
            for _ in range(n)]  # fmt: skip
    return {"train": rows[: n - 20], "validation": rows[n - 20 :]}


def _model(name: str = "tiny-bert", kind: str = "masked_lm") -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model, tok = load_model(name, kind)
    for m in model.modules():  # deterministic steps, so a resumed run can be compared
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    model.config.attention_probs_dropout_prob = 0.0
    return model, tok


def _cfg(tmp_path: Path, **kw: object) -> ModularizeConfig:
    base = {"model": "tiny-bert", "kind": "masked_lm", "steps": 20, "batch_size": 4,
            "max_length": 32, "eval_every": 10, "eval_batches": 2, "progress": False,
            "output_dir": tmp_path / "run"}  # fmt: skip
    base.update(kw)
    return ModularizeConfig.model_validate(base)


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "modularize.json").read_text())


def test_alpha_zero_keeps_density_and_base_weights_never_change(tmp_path: Path) -> None:
    model, tok = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(tmp_path, alpha=0.0, lr=0.01, init_low=0.5)
    assert modularize(cfg, model=model, tokenizer=tok, texts=_texts()) == {}
    assert all(r["kept"] == 1.0 for r in _summary(tmp_path)["history"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_large_alpha_drives_density_down_and_snapshots_at_crossing(tmp_path: Path) -> None:
    model, tok = _model()
    cfg = _cfg(tmp_path, alpha=50.0, lr=0.05, steps=40)
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    assert sorted(paths) == [0.25, 0.5, 0.75]
    history = _summary(tmp_path)["history"]
    for level, path in paths.items():
        module = load_module(path, params=model.named_parameters())  # round-trips, same base
        step = module.metadata["step"]
        kept_then = next(r["kept"] for r in history if r["step"] == step)
        kept_before = next(r["kept"] for r in history if r["step"] == step - 1)
        assert module.density() == pytest.approx(kept_then)
        assert module.density() <= level < kept_before  # first crossing
        assert "val_loss" in module.metadata
        assert not any(n.startswith("cls.") for n in module.masks)  # the head is never masked


@pytest.mark.slow
def test_resume_continues_where_a_killed_run_stopped(tmp_path: Path) -> None:
    texts = _texts()
    model, tok = _model()
    full = _cfg(tmp_path / "a", alpha=5.0, lr=0.02, steps=12, checkpoint_every=4,
                stop_after_last_level=False)  # fmt: skip
    modularize(full, model=model, tokenizer=tok, texts=texts)
    model2, tok2 = _model()
    part = full.model_copy(update={"steps": 8, "output_dir": tmp_path / "b" / "run"})
    modularize(part, model=model2, tokenizer=tok2, texts=texts)
    resumed = part.model_copy(update={"steps": 12})
    model3, tok3 = _model()
    modularize(resumed, model=model3, tokenizer=tok3, texts=texts)
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 12
    for k, v in a["scores"].items():
        assert torch.allclose(v, b["scores"][k], atol=1e-6), k


def test_fresh_head_trains_but_is_not_part_of_the_module(tmp_path: Path) -> None:
    model, tok = _model()
    fresh = ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias")
    model.modularevo_fresh_keys = fresh  # as load_model marks weights a checkpoint lacks
    head_before = model.cls.predictions.transform.dense.weight.detach().clone()
    emb_before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    cfg = _cfg(tmp_path, alpha=50.0, lr=0.05, steps=30, head_warmup_steps=3, lr_head=0.01)
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    assert not torch.equal(model.cls.predictions.transform.dense.weight, head_before)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb_before)
    run = tmp_path / "run"
    assert (run / "head-dense.safetensors").is_file()
    assert (run / "head-0.25.safetensors").is_file()
    module = load_module(paths[0.25])
    assert not set(fresh) & set(module.masks)
    assert module.metadata["mask_step"] == module.metadata["step"] - 3


def test_causal_tied_lm_head_is_not_masked(tmp_path: Path) -> None:
    model, tok = _model("tiny-gptneo", "causal_lm")
    wte = model.get_input_embeddings().weight.detach().clone()
    cfg = _cfg(tmp_path, model="tiny-gptneo", kind="causal_lm", alpha=50.0, lr=0.05, steps=30)
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    module = load_module(paths[0.25])
    assert not any("lm_head" in n or "wte" in n for n in module.masks)
    assert torch.equal(model.get_input_embeddings().weight, wte)


def test_structured_run_writes_whole_neuron_masks(tmp_path: Path) -> None:
    model, tok = _model()
    cfg = _cfg(tmp_path, alpha=50.0, lr=0.05, steps=40, structured=True,
               snapshot_levels=[0.5])  # fmt: skip
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    module = load_module(paths[0.5])
    up = module.masks["bert.encoder.layer.0.intermediate.dense.weight"]
    assert (up.all(dim=1) == up.any(dim=1)).all()
    assert set(module.metadata["units"]) >= {
        "ffn:bert.encoder.layer.0",
        "heads:bert.encoder.layer.0",
    }


@pytest.mark.slow
def test_seq2seq_objective_runs(tmp_path: Path) -> None:
    model, tok = _model("tiny-t5", "seq2seq")
    cfg = _cfg(tmp_path, model="tiny-t5", kind="seq2seq", alpha=50.0, lr=0.05, steps=30,
               snapshot_levels=[0.5])  # fmt: skip
    assert 0.5 in modularize(cfg, model=model, tokenizer=tok, texts=_texts())
