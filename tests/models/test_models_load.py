"""load_model / resolve_model: embedded defaults, kinds, classifier round trip, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modularevo.errors import InputError, UnknownNameError
from modularevo.models import MODELS, describe, load_model, resolve_model
from modularevo.models.defaults import PRETRAIN_COMMAND
from modularevo.models.load import allowed_kinds

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path / "cache"))


def _batch(tok, texts=("a bc", "hello world")):
    enc = tok(list(texts), return_tensors="pt", padding=True)
    enc.pop("token_type_ids", None)
    return dict(enc)


TINY_KINDS = [
    ("tiny-gptneo", "causal_lm"),
    ("tiny-gptneo", "classifier"),
    ("tiny-bert", "masked_lm"),
    ("tiny-bert", "encoder"),
    ("tiny-bert", "classifier"),
    ("tiny-t5", "seq2seq"),
    ("tiny-t5", "encoder"),
    ("tiny-t5", "classifier"),
]


@pytest.mark.parametrize(("name", "kind"), TINY_KINDS)
def test_tiny_models_load_and_run(name: str, kind: str) -> None:
    model, tok = load_model(name, kind, num_labels=3)
    batch = _batch(tok)
    with torch.no_grad():
        if kind == "seq2seq":
            out = model(**batch, labels=batch["input_ids"])
            assert torch.isfinite(out.loss)
        else:
            out = model(**batch)
    n, seq = batch["input_ids"].shape
    if kind == "classifier":
        assert out.logits.shape == (n, 3)
        assert "classifier" in describe(model).heads
        assert model.modularevo_fresh_keys == ("classifier.weight", "classifier.bias")
    elif kind == "encoder":
        assert out.last_hidden_state.shape == (n, seq, 32)
    else:
        assert out.logits.shape == (n, seq, 128)


def test_tiny_models_are_deterministic_and_match_registry_params() -> None:
    a, _ = load_model("tiny-gptneo", "causal_lm")
    b, _ = load_model("tiny-gptneo", "causal_lm")
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na
    for name in ("tiny-gptneo", "tiny-bert", "tiny-t5"):
        model, _ = load_model(name, MODELS.get(name).kind)
        assert MODELS.get(name).params() == sum(p.numel() for p in model.parameters())


def test_resolve_tiny_writes_a_loadable_folder() -> None:
    path = resolve_model("tiny-bert")
    assert (Path(path) / "config.json").is_file()
    from_disk, tok = load_model(path, "masked_lm")
    in_memory, _ = load_model("tiny-bert", "masked_lm")
    batch = _batch(tok)
    with torch.no_grad():
        torch.testing.assert_close(from_disk(**batch).logits, in_memory(**batch).logits)


def test_saved_classifier_round_trip(tmp_path: Path) -> None:
    clf, tok = load_model("tiny-gptneo", "classifier", num_labels=4)
    clf.classifier.weight.data.normal_()
    clf.save_pretrained(tmp_path / "clf")
    tok.save_pretrained(tmp_path / "clf")
    again, tok2 = load_model(str(tmp_path / "clf"), "classifier")
    assert again.modularevo_fresh_keys == ()
    batch = _batch(tok2)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, clf(**batch).logits)


def test_minilm_encoder_and_masked_lm_head_reported() -> None:
    enc, tok = load_model("minilm", "encoder")
    assert sum(p.numel() for p in enc.parameters()) == 22_713_216
    with torch.no_grad():
        out = enc(**tok(["a sentence"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384
    mlm, _ = load_model("minilm", "masked_lm")
    assert "cls.predictions.transform.dense.weight" in mlm.modularevo_fresh_keys
    info = describe(mlm)
    assert info.family == "bert"
    assert len(info.ffn) == 6
    assert info.heads == ("cls",)


@pytest.mark.slow
def test_minilm_seq2seq_builds_once_and_runs() -> None:
    model, tok = load_model("minilm-seq2seq", "seq2seq")
    assert sum(p.numel() for p in model.parameters()) == 49_010_490
    assert MODELS.get("minilm-seq2seq").built()
    batch = tok(["hello world"], return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    labels=batch.input_ids)  # fmt: skip
    assert torch.isfinite(out.loss)
    assert describe(model).family == "encoder_decoder"


def test_wrong_kind_for_model() -> None:
    with pytest.raises(InputError, match=r"encoder-only 'bert'.*masked_lm, encoder, classifier"):
        load_model("tiny-bert", "causal_lm")
    with pytest.raises(InputError, match="decoder-only"):
        load_model("tiny-gptneo", "seq2seq")
    with pytest.raises(InputError, match="Did you mean 'classifier'"):
        load_model("tiny-bert", "clasifier")
    with pytest.raises(InputError, match="num_labels"):
        load_model("tiny-bert", "classifier")


def test_unknown_model_did_you_mean() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'minilm'"):
        resolve_model("minilmm")
    with pytest.raises(InputError, match="Did you mean 'tiny-bert'"):
        load_model("tiny-bertt", "encoder")


def test_hub_name_offline_says_use_local_folder() -> None:
    with pytest.raises(InputError, match=r"offline.*pass the folder path instead") as err:
        resolve_model("EleutherAI/gpt-neo-125m")
    assert "\n" not in str(err.value)


def test_missing_or_bad_local_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "weights.bin").write_text("x")
    with pytest.raises(InputError, match=r"no config.json \(found: \['weights.bin'\]\)"):
        resolve_model(str(tmp_path / "empty"))


def test_gptneo_small_not_built_names_the_command() -> None:
    assert not MODELS.get("gptneo-small").built()
    with pytest.raises(InputError, match=PRETRAIN_COMMAND.replace(".", r"\.")):
        load_model("gptneo-small", "causal_lm")


def test_allowed_kinds_by_architecture() -> None:
    import transformers as tf

    assert allowed_kinds(tf.T5Config()) == ("seq2seq", "encoder", "classifier")
    assert allowed_kinds(tf.RobertaConfig()) == ("masked_lm", "encoder", "classifier")
    assert allowed_kinds(tf.LlamaConfig()) == ("causal_lm", "classifier")
