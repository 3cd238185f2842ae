"""Exact match and greedy evaluation of a causal LM on a generation task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from generation_helpers import PAIRS, pairs_dataset
from modularevo.errors import InputError
from modularevo.evaluation.evaluate import evaluate_model
from modularevo.evaluation.generation import exact_match, normalize_answer
from modularevo.models.load import load_model
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  42 ", "42"),
        ("42.\nThe answer is 42.", "42"),  # first line only, final period dropped
        ("x  =\t2", "x = 2"),
        ("３", "3"),  # NFKC: full-width digit
        ("True", "True"),  # case is kept
        ("0.5", "0.5"),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str):
    assert normalize_answer(raw) == expected


def test_exact_match_counts_normalised_equality():
    assert exact_match(["4", " blue.", "Paris"], ["4", "blue", "paris"]) == pytest.approx(2 / 3)
    assert exact_match(["-1/2"], ["-1/2 "]) == 1.0
    assert exact_match(["12"], ["1"]) == 0.0  # a prefix is not a match
    with pytest.raises(InputError, match="2 predictions for 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(InputError, match="empty"):
        exact_match([], [])


def test_evaluate_model_scores_a_fine_tuned_folder_against_its_start(tmp_path: Path):
    model, tok = load_model("tiny-gptneo", "causal_lm")
    data = pairs_dataset()
    start = evaluate_model(model, dataset=data, tokenizer=tok, split="test", max_new_tokens=8)
    assert start["task_type"] == "generation"
    assert start["accuracy"] == 0.0  # the control: the untrained decoder
    cfg = FinetuneConfig(
        model="tiny-gptneo", task="pairs", strategy="full", lr=1e-2, max_steps=150,
        batch_size=6, eval_every=150, checkpoint_every=None, weight_decay=0.0,
        output_dir=str(tmp_path / "ft"), progress=False, generation={"max_new_tokens": 8},
    )  # fmt: skip
    res = finetune(cfg, model=model, tokenizer=tok, dataset=data)
    done = evaluate_model(str(res.model_dir), dataset=data, split="test", max_new_tokens=8)
    assert done["accuracy"] == 1.0
    assert done["predictions"] == done["labels"] == [a for _, a in PAIRS]
    assert done["n"] == len(PAIRS)
    lo, hi = done["ci95"]
    assert 0.5 < lo < hi == 1.0
    assert done["loss"] < start["loss"]
    short = evaluate_model(str(res.model_dir), dataset=data, split="test", max_new_tokens=2)
    assert short["accuracy"] < 1.0  # "green", "paris" need more than 2 new tokens


def test_cli_evaluates_a_local_generation_folder(tmp_path: Path, run_cli):
    data = pairs_dataset()
    for split in ("train", "validation", "test"):
        rows = data[split].select_columns(["text", "target"])
        rows.to_json(str(tmp_path / f"{split}.jsonl"))
    lm, tok = load_model("tiny-gptneo", "causal_lm")
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    code, out = run_cli(["evaluate", str(tmp_path / "lm"), str(tmp_path), "--split", "test",
                         "--max-new-tokens", "4"])  # fmt: skip
    assert code == 0, out
    out = " ".join(out.split())  # rich wraps long lines
    assert "exact match 0.0000 (95% CI [0.0000, 0.3903])" in out
    assert "(6 examples)" in out
