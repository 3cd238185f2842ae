"""`finetune` with `gates:` writes a structured module that extracts to the run's logits;
with `distill:` it trains against a teacher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))  # finetune_helpers
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from modularevo.deploy.extract import extract_module
from modularevo.modules.io import load_module
from modularevo.training.distill import DistillConfig
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.structured_gates import GatesConfig


def _cfg(out: Path, **kw) -> FinetuneConfig:
    base = dict(model="tiny", task="toy", strategy="full", lr=1e-3, max_steps=40, eval_every=20,
                patience=None, checkpoint_every=None, output_dir=str(out), progress=False,
                max_length=16, batch_size=16)  # fmt: skip
    return FinetuneConfig.model_validate({**base, **kw})


def test_gates_run_writes_a_module_that_extracts_to_the_same_logits(tmp_path: Path) -> None:
    gates = GatesConfig(ffn_density=0.25, head_density=0.5, warmup_fraction=0.5)
    res = finetune(_cfg(tmp_path / "g", gates=gates), model=tiny_classifier(dropout=0.0),
                   tokenizer=tiny_tokenizer(), dataset=tiny_dataset())  # fmt: skip
    assert (tmp_path / "g" / "module.safetensors").is_file()
    kept = res.metrics["gates"]["kept_units"]
    assert sorted(kept.values()) == [1, 1, 8, 8]  # 2 heads x 0.5, 32 neurons x 0.25
    assert res.model is not None
    model = res.model.eval()
    module = load_module(tmp_path / "g" / "module.safetensors", params=model.named_parameters(),
                         allow_modified=True)  # fmt: skip
    small = extract_module(model, module)
    ids = torch.randint(4, 34, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
        got = small(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert 0.0 <= res.metrics["test"]["accuracy"] <= 1.0


def test_distill_run_uses_the_teacher(tmp_path: Path) -> None:
    teacher = finetune(_cfg(tmp_path / "t"), model=tiny_classifier(dropout=0.0),
                       tokenizer=tiny_tokenizer(), dataset=tiny_dataset()).model  # fmt: skip
    assert teacher is not None
    cfg = _cfg(tmp_path / "s", distill=DistillConfig(ce_weight=0.0), max_steps=30, eval_every=5)
    res = finetune(cfg, model=tiny_classifier(seed=1, dropout=0.0), tokenizer=tiny_tokenizer(),
                   dataset=tiny_dataset(), teacher=teacher)  # fmt: skip
    assert res.metrics["distill"]["ce_weight"] == 0.0
    losses = [h["train_loss"] for h in res.metrics["history"] if h["train_loss"] is not None]
    assert losses[-1] < losses[0]
    with pytest.raises(Exception, match="teacher"):
        finetune(_cfg(tmp_path / "x", distill=DistillConfig()), model=tiny_classifier(),
                 tokenizer=tiny_tokenizer(), dataset=tiny_dataset())  # fmt: skip


def test_gates_and_distill_need_strategy_full() -> None:
    with pytest.raises(ValidationError, match="strategy 'full'"):
        _cfg(Path("x"), strategy="lora", gates=GatesConfig())
    with pytest.raises(ValidationError, match="strategy 'full'"):
        _cfg(Path("x"), strategy="module", module="m.safetensors", distill=DistillConfig())
