import pytest
from finetune_helpers import tiny_dataset, tiny_tokenizer

from modularevo.data.collate import pad_batch, pad_id_of, tokenize_split
from modularevo.errors import InputError


def test_pad_batch_right_pads_to_longest():
    examples = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [5], "attention_mask": [1], "labels": 0},
    ]
    batch = pad_batch(examples, pad_id=9)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert "token_type_ids" not in batch


def test_tokenize_split_truncates_and_keeps_labels():
    ds = tiny_dataset(n_train=10, n_eval=2)["train"]
    tok = tiny_tokenizer()
    enc = tokenize_split(ds, tok, max_length=5, chunk=3)
    assert len(enc) == 10
    assert all(len(e["input_ids"]) <= 5 for e in enc)
    assert [e["labels"] for e in enc] == ds["label"]
    assert enc[0]["input_ids"][0] == tok.cls_token_id
    assert pad_id_of(tok) == 0


def test_tokenize_split_needs_text_and_label():
    with pytest.raises(InputError, match="expected 'text' and 'label'"):
        tokenize_split([{"sentence": "a", "label": 0}], tiny_tokenizer(), max_length=8)
