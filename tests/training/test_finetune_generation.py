"""Generation tasks in `finetune`: answer-only loss, greedy exact match, full and module."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from generation_helpers import PAIRS, pairs_dataset
from modularevo.data.collate import pad_batch
from modularevo.data.generation import IGNORE_INDEX, resolve_task_type, tokenize_pairs
from modularevo.errors import InputError
from modularevo.evaluation.generation import greedy_answers
from modularevo.models.load import load_model
from modularevo.modules import ModuleMask, fingerprint, save_module
from modularevo.training.finetune import bits_differ, finetune
from modularevo.training.finetune_config import FinetuneConfig

torch.set_num_threads(1)


def _cfg(tmp_path, strategy: str = "full", **kw) -> FinetuneConfig:
    base = {
        "model": "tiny-gptneo", "task": "pairs", "strategy": strategy, "lr": 1e-2,
        "max_steps": 150, "batch_size": 6, "eval_every": 150, "checkpoint_every": None,
        "weight_decay": 0.0, "output_dir": str(tmp_path / strategy), "progress": False,
        "generation": {"max_new_tokens": 8},
    }  # fmt: skip
    base.update(kw)
    return FinetuneConfig(**base)


def test_prompt_positions_are_ignored_by_the_loss():
    model, tok = load_model("tiny-gptneo", "causal_lm")
    examples = tokenize_pairs(pairs_dataset()["validation"], tok, max_length=64)
    for ex in examples:
        n = ex["prompt_len"]
        assert n == len(ex["prompt_ids"]) > 0
        assert ex["input_ids"][:n] == ex["prompt_ids"]
        assert ex["labels"][:n] == [IGNORE_INDEX] * n
        answer = ex["input_ids"][n:]
        assert ex["labels"][n:] == answer
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer, skip_special_tokens=True).strip() == ex["target"]
    batch = pad_batch(examples, pad_id=tok.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    logits, ids = out.logits[:, :-1], batch["input_ids"][:, 1:]
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    per_token = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    answer_only = per_token[keep].mean()
    every_real_token = per_token[batch["attention_mask"][:, 1:].bool()].mean()
    assert out.loss == pytest.approx(float(answer_only), rel=1e-5)
    # the control: counting the prompt tokens gives another number, so the test can fail
    assert abs(float(every_real_token) - float(answer_only)) > 1e-3


def test_prompt_keeps_its_end_when_cut():
    _, tok = load_model("tiny-gptneo", "causal_lm")
    ds = [{"text": "x" * 200, "target": "yes"}]
    (ex,) = tokenize_pairs(ds, tok, max_length=40, prompt_template="{text}\nAnswer:")
    assert len(ex["input_ids"]) == 40
    assert tok.decode(ex["prompt_ids"]).endswith("answer:")  # the char tokenizer lower-cases
    (short,) = tokenize_pairs(ds, tok, max_length=16, max_target_length=16)
    assert len(short["input_ids"]) == 16
    assert short["labels"].count(IGNORE_INDEX) == 11  # " yes" + EOS = 5; the prompt keeps 11


def test_task_type_is_read_from_the_columns():
    assert resolve_task_type("auto", pairs_dataset()) == "generation"
    labelled = {"train": [{"text": "a", "label": 0}]}
    assert resolve_task_type("auto", labelled) == "classification"
    with pytest.raises(InputError, match="'target' column"):
        resolve_task_type("generation", labelled)


@pytest.mark.parametrize("key", ["gates", "distill"])
def test_deployment_training_is_refused_on_a_generation_task(tmp_path, key):
    model, tok = load_model("tiny-gptneo", "causal_lm")
    earlier = tmp_path / "full" / "metrics.json"  # a finished run the refused one must not clear
    earlier.parent.mkdir()
    earlier.write_text("{}")
    cfg = _cfg(tmp_path, overwrite=True, **{key: {}})
    with pytest.raises(InputError, match=f"`{key}` works on classification tasks only"):
        finetune(cfg, model=model, tokenizer=tok, dataset=pairs_dataset())
    assert earlier.read_text() == "{}"


def test_full_finetune_memorises_pairs_and_saves_predictions(tmp_path):
    model, tok = load_model("tiny-gptneo", "causal_lm")
    res = finetune(_cfg(tmp_path), model=model, tokenizer=tok, dataset=pairs_dataset())
    m = res.metrics
    assert m["task_type"] == "generation"
    start = m["history"][0]
    assert start["step"] == 0
    assert start["val_accuracy"] == 0.0  # the untrained start: the control
    assert m["validation"]["accuracy"] == 1.0
    assert m["validation"]["predictions"] == [a for _, a in PAIRS]
    assert m["validation"]["loss"] < start["val_loss"] / 10
    lo, hi = m["test"]["ci95"]
    assert lo < 1.0 == hi  # Wilson interval of 6/6
    saved = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert saved["test"]["labels"] == [a for _, a in PAIRS]
    reloaded, _ = load_model(str(res.model_dir), "causal_lm")
    prompts = [
        ex["prompt_ids"] for ex in tokenize_pairs(pairs_dataset()["test"], tok, max_length=64)
    ]
    got = greedy_answers(reloaded, prompts, pad_id=0, eos_id=tok.eos_token_id, max_new_tokens=8)
    assert [tok.decode(a).strip() for a in got] == [a for _, a in PAIRS]


def test_generate_and_plain_loop_agree_with_left_padding():
    model, tok = load_model("tiny-gptneo", "causal_lm")
    torch.manual_seed(0)
    with torch.no_grad():  # a sharper random model, so that argmax ties cannot hide a bug
        for p in model.parameters():
            p.mul_(4.0)
    prompts = [tok("a")["input_ids"], tok("a much longer prompt here")["input_ids"]]
    kw = {"pad_id": 0, "eos_id": tok.eos_token_id, "max_new_tokens": 6}
    fast = greedy_answers(model, prompts, use_generate=True, **kw)
    slow = greedy_answers(model, prompts, use_generate=False, **kw)
    alone = [greedy_answers(model, [p], use_generate=False, **kw)[0] for p in prompts]
    assert fast == slow == alone


def _causal_module(model: torch.nn.Module, path, density: float = 0.3) -> ModuleMask:
    g = torch.Generator().manual_seed(0)
    masked = {
        n: p for n, p in model.named_parameters()
        if n.startswith("transformer.h.") and p.ndim == 2
    }  # fmt: skip
    module = ModuleMask(
        masks={n: torch.rand(p.shape, generator=g) < density for n, p in masked.items()},
        domain="toy", arch_fingerprint=fingerprint(masked.items(), values=False),
        base_fingerprint=fingerprint(masked.items()),
    )  # fmt: skip
    save_module(module, path)
    return module


def test_module_finetune_changes_only_masked_weights_and_learns(tmp_path):
    model, tok = load_model("tiny-gptneo", "causal_lm")
    module = _causal_module(model, tmp_path / "m.safetensors")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _cfg(tmp_path, "module", module=str(tmp_path / "m.safetensors"), max_steps=60,
               eval_every=60)  # fmt: skip
    res = finetune(cfg, model=model, tokenizer=tok, dataset=pairs_dataset())
    after = dict(model.named_parameters())
    for name, b in before.items():
        diff = bits_differ(after[name].detach(), b)
        if name in module.masks:
            assert not diff[~module.masks[name].view(-1)].any(), name
            assert diff[module.masks[name].view(-1)].any(), name
        else:  # embeddings (tied to the LM head), norms, position table: frozen
            assert not diff.any(), name
    hist = res.metrics["history"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert res.metrics["mask"]["out_of_mask_changed"] == 0
