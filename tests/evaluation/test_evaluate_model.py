import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from modularevo.errors import InputError
from modularevo.evaluation import accuracy, evaluate_model, macro_f1


def test_evaluate_model_matches_a_hand_loop():
    model, tok, ds = tiny_classifier().eval(), tiny_tokenizer(), tiny_dataset(n_eval=30)
    res = evaluate_model(model, tokenizer=tok, dataset=ds, split="test", batch_size=7)
    preds, losses = [], []
    with torch.no_grad():
        for row in ds["test"]:
            enc = tok(row["text"], return_tensors="pt")
            logits = model(**enc).logits
            preds.append(int(logits.argmax(-1)))
            losses.append(
                float(torch.nn.functional.cross_entropy(logits, torch.tensor([row["label"]])))
            )
    labels = ds["test"]["label"]
    assert res["n"] == 30
    assert res["split"] == "test"
    assert res["accuracy"] == accuracy(labels, preds)
    assert res["macro_f1"] == pytest.approx(macro_f1(labels, preds, labels=[0, 1, 2]))
    assert res["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_evaluate_model_errors():
    ds = tiny_dataset(n_eval=4)
    with pytest.raises(InputError, match="split 'dev' not in the dataset"):
        evaluate_model(tiny_classifier(), tokenizer=tiny_tokenizer(), dataset=ds, split="dev")
    with pytest.raises(InputError, match="needs its `tokenizer`"):
        evaluate_model(tiny_classifier(), dataset=ds)
