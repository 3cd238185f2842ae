"""Best-step selection includes step 0, per-example predictions, warm-up then decay."""

import logging

import torch
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.finetune_run import linear_schedule


def _cfg(tmp_path, **kw):
    base = {
        "model": "tiny", "task": "tiny", "strategy": "full", "lr": 1e-2, "max_steps": 6,
        "batch_size": 8, "eval_every": 3, "checkpoint_every": None, "patience": None,
        "output_dir": str(tmp_path / "ft"), "progress": False,
    }  # fmt: skip
    base.update(kw)
    return FinetuneConfig(**base)


def test_step_zero_is_evaluated_and_kept_when_training_only_hurts(tmp_path):
    model = tiny_classifier()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    # lr 50 wrecks every weight at the first step, so the start must win on validation
    res = finetune(
        _cfg(tmp_path, lr=50.0, max_grad_norm=None),
        model=model,
        tokenizer=tiny_tokenizer(),
        dataset=tiny_dataset(),
    )
    hist = res.metrics["history"]
    assert [h["step"] for h in hist] == [0, 3, 6]
    assert all(h["val_accuracy"] <= hist[0]["val_accuracy"] for h in hist[1:])
    assert res.metrics["best_step"] == 0  # no gain over the start: the start is kept
    assert res.model is not None
    for n, p in res.model.named_parameters():
        assert torch.equal(p.detach(), start[n]), f"{n} differs from the start"


def test_without_eval_at_start_the_first_evaluation_is_after_training(tmp_path):
    res = finetune(
        _cfg(tmp_path, eval_at_start=False),
        model=tiny_classifier(),
        tokenizer=tiny_tokenizer(),
        dataset=tiny_dataset(),
    )
    assert [h["step"] for h in res.metrics["history"]] == [3, 6]
    assert res.metrics["best_step"] == 3


def test_every_evaluation_keeps_its_per_example_predictions(tmp_path):
    res = finetune(
        _cfg(tmp_path), model=tiny_classifier(), tokenizer=tiny_tokenizer(), dataset=tiny_dataset()
    )
    m = res.metrics
    for h in m["history"]:
        assert len(h["val_predictions"]) == 24
        pairs = zip(h["val_predictions"], m["validation"]["labels"], strict=True)
        acc = sum(p == y for p, y in pairs) / 24
        assert abs(acc - h["val_accuracy"]) < 1e-9
    for split in ("validation", "test"):
        assert len(m[split]["predictions"]) == len(m[split]["labels"]) == m[split]["n"]


def test_warmup_then_linear_decay_and_a_warning_when_warmup_covers_the_run(tmp_path, caplog):
    f = linear_schedule(_cfg(tmp_path, warmup_steps=4), 10)
    assert [round(f(s), 3) for s in (0, 3, 4, 7, 10)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    with caplog.at_level(logging.WARNING, logger="modularevo.training.finetune_run"):
        finetune(
            _cfg(tmp_path, warmup_steps=6),
            model=tiny_classifier(),
            tokenizer=tiny_tokenizer(),
            dataset=tiny_dataset(),
        )
    assert any("never decays" in r.getMessage() for r in caplog.records)
