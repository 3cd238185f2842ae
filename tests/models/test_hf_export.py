"""A saved classifier runs in plain transformers with the trained pooling, head and labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, pipeline

from modularevo.models.load import load_model

TEXTS = ["the court shall grant", "def f(x): return x", "bonjour"]


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-gptneo"])
def test_transformers_reproduces_the_project_logits(name: str, tmp_path: Path) -> None:
    model, tok = load_model(name, "classifier", num_labels=3)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.classifier.weight)  # a head that is not the default init
    model.set_label_names(["law", "code", "french"])
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert plain.config.id2label == {0: "law", 1: "code", 2: "french"}
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.eval()(**batch).logits
        theirs = plain.eval()(**batch).logits
    torch.testing.assert_close(theirs, ours)

    clf = pipeline("text-classification", model=str(tmp_path), trust_remote_code=True)
    labels = [r["label"] for r in clf(TEXTS)]
    names = ["law", "code", "french"]
    for text, label in zip(TEXTS, labels, strict=True):
        one = tok([text], return_tensors="pt")
        with torch.no_grad():
            assert label == names[int(model(**one).logits.argmax())]


def test_the_project_loader_keeps_the_label_names(tmp_path: Path) -> None:
    model, tok = load_model("tiny-bert", "classifier", num_labels=2)
    model.set_label_names(["no", "yes"])
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, _ = load_model(str(tmp_path), "classifier")
    assert again.label_names == ["no", "yes"]
