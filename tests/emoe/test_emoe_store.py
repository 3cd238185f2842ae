"""save_emoe / load_emoe round trips, dense loading by transformers, and inspect_emoe."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from emoe_helpers import main_output, tiny_bert, tiny_gpt2

from modularevo.emoe import (
    emoe_convert,
    emoe_layers,
    inspect_emoe,
    load_emoe,
    read_emoe_meta,
    save_emoe,
)
from modularevo.errors import InputError


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2])
def test_save_load_round_trip_is_identical(build, ids, tmp_path):
    model = emoe_convert(build(), experts=4, top_k=2, layers=[1])
    out = save_emoe(model, tmp_path / "emoe")
    loaded, tok = load_emoe(out)
    assert tok is None  # no tokenizer was saved
    assert sorted(emoe_layers(loaded)) == [1]
    layer, again = emoe_layers(model)[1], emoe_layers(loaded)[1]
    assert torch.equal(layer.gates, again.gates)
    assert torch.equal(layer.perm, again.perm)
    assert again.cluster_sizes == layer.cluster_sizes
    torch.testing.assert_close(main_output(loaded, ids), main_output(model, ids))


def test_folder_loads_as_the_dense_model_in_transformers(ids, tmp_path):
    dense = tiny_bert()
    reference = main_output(dense, ids)
    save_emoe(emoe_convert(dense, experts=4, top_k=1, layers="all"), tmp_path / "m")
    plain = tf.AutoModel.from_pretrained(tmp_path / "m").eval()  # permuted but same function
    torch.testing.assert_close(main_output(plain, ids), reference, atol=1e-5, rtol=1e-5)
    meta = json.loads((tmp_path / "m" / "emoe.json").read_text())
    assert (meta["experts"], meta["top_k"], meta["layers"]) == (4, 1, [0, 1])
    assert meta["per_layer"]["0"]["cluster_sizes"] == [16, 16, 16, 16]
    assert meta["paper"].endswith("2310.10908")


def test_save_refuses_dense_model_and_existing_folder(tmp_path):
    with pytest.raises(InputError, match="has no EMoE layer"):
        save_emoe(tiny_bert(), tmp_path / "a")
    model = emoe_convert(tiny_bert(), experts=4, top_k=2)
    save_emoe(model, tmp_path / "a")
    with pytest.raises(InputError, match="already exists"):
        save_emoe(model, tmp_path / "a")
    save_emoe(model, tmp_path / "a", overwrite=True)


def test_load_of_a_non_emoe_folder_says_how_to_fix(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "dense")
    with pytest.raises(InputError, match=r"not an EMoE folder: no emoe.json.*emoe convert"):
        read_emoe_meta(tmp_path / "dense")


def test_inspect_reports_kept_fraction():
    from modularevo.models import load_model

    model, tok = load_model("tiny-bert", "encoder")
    emoe_convert(model, experts=4, top_k=4, layers="all")
    full = inspect_emoe(model, tok, ["abc def", "hello"])
    assert full.output_cosine == pytest.approx(1.0, abs=1e-5)
    for r in full.layers:
        assert r.rel_error == pytest.approx(0.0, abs=1e-6)
        assert r.activation_kept == pytest.approx(1.0)
        assert sum(r.expert_load) == 4 * r.tokens
    for layer in emoe_layers(model).values():
        layer.top_k = 1
    part = inspect_emoe(model, tok, ["abc def", "hello"])
    assert all(0.0 < r.activation_kept < 1.0 for r in part.layers)
    assert all(sum(r.expert_load) == r.tokens for r in part.layers)


def test_classifier_round_trip(tmp_path):
    from modularevo.models import load_model

    model, tok = load_model("tiny-bert", "classifier", num_labels=3)
    emoe_convert(model, experts=4, top_k=2, layers="last1")
    batch = tok(["abc", "de fg"], return_tensors="pt", padding=True)
    expected = model(**batch).logits
    save_emoe(model, tmp_path / "clf", tokenizer=tok)
    assert read_emoe_meta(tmp_path / "clf")["kind"] == "classifier"
    loaded, tok2 = load_emoe(tmp_path / "clf")
    assert sorted(emoe_layers(loaded)) == [1]
    torch.testing.assert_close(
        loaded(**tok2(["abc", "de fg"], return_tensors="pt", padding=True)).logits, expected
    )
