"""The embedded gemma-270m: registration, the message without its extra, the built model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from modularevo.errors import InputError
from modularevo.models import gemma
from modularevo.models.defaults import MODELS


def test_registered_as_a_causal_llama_family_default():
    spec = MODELS.get("gemma-270m")
    assert (spec.kind, spec.family, spec.tiny) == ("causal_lm", "llama", False)
    assert spec.params() == 268_098_176
    assert "gemma" in spec.source


def test_missing_extra_names_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a)
    )
    monkeypatch.setenv("MODULAREVO_CACHE", str(tmp_path))
    with pytest.raises(InputError, match=r"gguf, which are not installed.*modularevo\[gemma\]"):
        MODELS.get("gemma-270m").locate()
    assert not (tmp_path / "models" / "gemma-270m").exists()


def test_models_ls_lists_it(run_cli):
    code, out = run_cli(["models", "ls"])
    assert code == 0
    assert "gemma-270m" in out


@pytest.mark.slow
def test_built_model_loads_with_terms_and_tied_head():
    if not MODELS.get("gemma-270m").built():
        pytest.skip("gemma-270m is not built here (build: load_model('gemma-270m', 'causal_lm'))")
    from modularevo.models import load_model

    model, tok = load_model("gemma-270m", "causal_lm")
    folder = MODELS.get("gemma-270m").locate()
    assert (folder / gemma.TERMS_FILE).is_file()
    assert "Gemma Terms of Use" in (folder / gemma.NOTICE_FILE).read_text()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4  # greedy decoding runs end to end
