"""The modularizer loop on tiny random models: density control, snapshots, resume, heads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from modularevo.errors import InputError
from modularevo.models import load_model
from modularevo.modules.io import load_module
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularizer import modularize, run_seed

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
FRESH = ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias")


def _texts(n: int = 120) -> dict[str, list[str]]:
    g = torch.Generator().manual_seed(0)
    rows = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (12,), generator=g))
            for _ in range(n)]  # fmt: skip
    return {"train": rows[: n - 20], "validation": rows[n - 20 :]}


def _model(name: str = "tiny-bert", kind: str = "masked_lm") -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model, tok = load_model(name, kind)
    return model, tok


def _cfg(tmp_path: Path, **kw: object) -> ModularizeConfig:
    base = {"model": "tiny-bert", "kind": "masked_lm", "steps": 20, "batch_size": 4,
            "max_length": 32, "eval_every": 10, "eval_batches": 2, "progress": False,
            "calibration_batches": 2, "output_dir": tmp_path / "run",
            "head_warmup": {"cache_dir": str(tmp_path / "heads"), "max_steps": 30,
                            "eval_every": 10, "batch_size": 4, "train_batches": 4,
                            "eval_batches": 2}}  # fmt: skip
    base.update(kw)
    return ModularizeConfig.model_validate(base)


def _summary(run: Path) -> dict:
    return json.loads((run / "modularize.json").read_text())


def test_alpha_zero_keeps_density_and_base_weights_never_change(tmp_path: Path) -> None:
    model, tok = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(tmp_path, alpha=0.0, lr=0.01, init_low=0.5)
    assert modularize(cfg, model=model, tokenizer=tok, texts=_texts()) == {}
    assert all(r["kept"] == 1.0 for r in _summary(tmp_path / "run")["history"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_calibrated_run_snapshots_at_crossings_and_reports_diagnostics(tmp_path: Path) -> None:
    model, tok = _model()
    cfg = _cfg(tmp_path, steps=60)
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    assert sorted(paths) == [0.25, 0.5, 0.75]
    summary = _summary(tmp_path / "run")
    cal = summary["calibration"]
    assert cal["alpha"] > 0
    assert cal["lr"] > 0
    assert 0.15 < cal["share_lm_rms_above_pressure"] < 0.35  # pressure at the 75th percentile
    history = summary["history"]
    assert any("share_lm_grad_above_pressure" in r for r in history)
    tokens = summary["tokens_per_level"]
    assert 0 < tokens["0.75"] < tokens["0.5"] < tokens["0.25"]
    lrs = [r["lr"] for r in history if "lr" in r]
    assert max(lrs) == pytest.approx(cal["lr"])
    assert lrs[0] < max(lrs)  # warm-up
    for level, path in paths.items():
        module = load_module(path, params=model.named_parameters())  # round-trips, same base
        step = module.metadata["step"]
        kept_then = next(r["kept"] for r in history if r["step"] == step)
        kept_before = next(r["kept"] for r in history if r["step"] == step - 1)
        assert module.density() == pytest.approx(kept_then)
        assert module.density() <= level < kept_before  # first crossing
        assert module.metadata["tokens"] == step * 4 * 32
        assert not any(n.startswith("cls.") for n in module.masks)  # the head is never masked


def test_score_init_is_seeded_by_seed_and_domain(tmp_path: Path) -> None:
    a = _cfg(tmp_path, dataset="math")
    assert run_seed(a) != run_seed(a.model_copy(update={"dataset": "law"}))
    assert run_seed(a) != run_seed(a.model_copy(update={"seed": 1}))
    assert run_seed(a) == run_seed(_cfg(tmp_path, dataset="math"))


def _no_dropout_free(model: nn.Module) -> None:
    """Dropout stays ON: the resume must restore torch's RNG to be bit-exact."""
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def test_resume_after_a_kill_is_bit_exact(tmp_path: Path) -> None:
    texts = _texts()
    model, tok = _model()
    _no_dropout_free(model)
    full = _cfg(tmp_path / "a", steps=12, checkpoint_every=4, stop_after_last_level=False)
    modularize(full, model=model, tokenizer=tok, texts=texts)
    # "kill" after step 8: run 12 steps with a hook that raises after the step-8 checkpoint
    import modularevo.training.modularizer as mz

    real = mz._after_step

    def killed(run: object, loss: float) -> bool:
        stop = real(run, loss)  # type: ignore[arg-type]
        if run.step == 9:  # type: ignore[attr-defined]
            raise KeyboardInterrupt
        return stop

    part = full.model_copy(update={"output_dir": tmp_path / "b" / "run"})
    model2, tok2 = _model()
    mz._after_step = killed  # type: ignore[assignment]
    try:
        with pytest.raises(KeyboardInterrupt):
            modularize(part, model=model2, tokenizer=tok2, texts=texts)
    finally:
        mz._after_step = real  # type: ignore[assignment]
    torch.manual_seed(123)  # a resumed process starts from other global RNG states
    model3, tok3 = _model()
    modularize(part, model=model3, tokenizer=tok3, texts=texts)
    a = torch.load(tmp_path / "a" / "run" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for k, v in a["scores"].items():
        assert torch.equal(v, b["scores"][k]), k


def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path: Path) -> None:
    texts = _texts()
    model, tok = _model()
    cfg = _cfg(tmp_path, steps=4, checkpoint_every=2, stop_after_last_level=False)
    modularize(cfg, model=model, tokenizer=tok, texts=texts)
    other = cfg.model_copy(update={"pressure_quantile": 0.3, "steps": 8})
    with pytest.raises(InputError, match=r"pressure_quantile.*steps|steps.*pressure_quantile"):
        modularize(other, model=model, tokenizer=tok, texts=texts)
    modularize(cfg.model_copy(update={"progress": False, "eval_every": 3}), model=model,
               tokenizer=tok, texts=texts)  # fmt: skip


def test_fresh_head_is_warmed_up_cached_frozen_and_not_in_the_module(tmp_path: Path) -> None:
    model, tok = _model()
    model.modularevo_fresh_keys = FRESH  # as load_model marks weights a checkpoint lacks
    emb_before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    mix = {"math": _texts(), "law": _texts(80)}
    cfg = _cfg(tmp_path, steps=40, head_warmup={**_cfg(tmp_path).head_warmup.model_dump(),
                                                "corpora": ["math", "law"]})  # fmt: skip
    paths = modularize(cfg, model=model, tokenizer=tok, texts=mix["math"], head_texts=mix)
    run = tmp_path / "run"
    from safetensors.torch import load_file

    head = load_file(str(run / "head.safetensors"))
    assert set(head) == set(FRESH)
    after = dict(model.named_parameters())
    for n, t in head.items():  # the head did not move while the masks learned
        assert torch.equal(after[n].detach(), t)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb_before)
    curve = json.loads((run / "head_warmup.json").read_text())["curve"]
    assert curve[0]["step"] == 0
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert set(curve[0]["per_corpus"]) == {"math", "law"}
    module = load_module(paths[0.25])
    assert not set(FRESH) & set(module.masks)
    assert module.metadata["head"] == "head.safetensors"
    # a second domain reuses the cached head (same base, mix and settings)
    model2, tok2 = _model()
    model2.modularevo_fresh_keys = FRESH
    cfg2 = cfg.model_copy(update={"dataset": "law", "output_dir": tmp_path / "run2"})
    modularize(cfg2, model=model2, tokenizer=tok2, texts=mix["law"], head_texts=mix)
    assert len(list((tmp_path / "heads").iterdir())) == 1
    head2 = load_file(str(tmp_path / "run2" / "head.safetensors"))
    assert all(torch.equal(head[n], head2[n]) for n in head)


def test_causal_tied_lm_head_is_not_masked(tmp_path: Path) -> None:
    model, tok = _model("tiny-gptneo", "causal_lm")
    wte = model.get_input_embeddings().weight.detach().clone()
    cfg = _cfg(tmp_path, model="tiny-gptneo", kind="causal_lm", steps=60)
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    module = load_module(paths[0.25])
    assert not any("lm_head" in n or "wte" in n for n in module.masks)
    assert torch.equal(model.get_input_embeddings().weight, wte)


def test_structured_run_writes_whole_neuron_masks(tmp_path: Path) -> None:
    model, tok = _model()
    cfg = _cfg(tmp_path, steps=60, structured=True, snapshot_levels=[0.5])
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
    cfg = _cfg(tmp_path, model="tiny-t5", kind="seq2seq", steps=60, snapshot_levels=[0.5])
    assert 0.5 in modularize(cfg, model=model, tokenizer=tok, texts=_texts())


def test_a_planted_pickle_checkpoint_is_refused_never_run(tmp_path: Path) -> None:
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (tmp_path / "PWNED",))

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(pickle.dumps(Payload()))
    model, tok = _model()
    with pytest.raises(InputError, match="read safely"):
        modularize(_cfg(tmp_path, steps=2), model=model, tokenizer=tok, texts=_texts())
    assert not (tmp_path / "PWNED").exists()
