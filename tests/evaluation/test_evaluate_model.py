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


def test_length_sorted_batches_pad_less_and_keep_example_order():
    """With ``lengths``, each batch holds examples of similar length (longest first) and
    the predictions still come back in example order, equal to one-by-one predictions."""
    from modularevo.evaluation.predict import eval_predictions
    from modularevo.utils.device import build_accelerator

    torch.manual_seed(0)
    lengths = [3, 11, 5, 11, 2, 9, 4, 7, 10, 6]
    examples = [{"input_ids": torch.randint(5, 20, (n,)).tolist(), "label": i % 3}
                for i, n in enumerate(lengths)]  # fmt: skip
    widths: list[int] = []

    def collate(idx: list[int]) -> dict[str, torch.Tensor]:
        longest = max(lengths[i] for i in idx)
        widths.append(longest)
        ids = torch.zeros(len(idx), longest, dtype=torch.long)
        mask = torch.zeros(len(idx), longest, dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : lengths[i]] = torch.tensor(examples[i]["input_ids"])
            mask[row, : lengths[i]] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "labels": torch.tensor([examples[i]["label"] for i in idx])}  # fmt: skip

    model = tiny_classifier().eval()
    acc = build_accelerator()
    one_by_one = [eval_predictions(acc, model, 1, lambda _i, j=j: collate([j]))[0][0]
                  for j in range(len(examples))]  # fmt: skip
    widths.clear()
    preds, labels, _ = eval_predictions(acc, model, len(examples), collate, batch_size=4,
                                        lengths=lengths)  # fmt: skip
    assert labels == [e["label"] for e in examples]
    assert preds == one_by_one
    assert widths == [11, 7, 3]  # sorted: (11, 11, 10, 9), (7, 6, 5, 4), (3, 2)
    widths.clear()
    eval_predictions(acc, model, len(examples), collate, batch_size=4)
    assert widths == [11, 9, 10]  # example order: 100 padded positions against 78
