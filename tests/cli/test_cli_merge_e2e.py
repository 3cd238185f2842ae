"""End-to-end ``modularevo merge`` on tiny random GPT-Neo, BERT and T5 models."""

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")


def _gptneo():
    cfg = transformers.GPTNeoConfig(
        vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=32,
        attention_types=[[["global", "local"], 1]], intermediate_size=64,
    )  # fmt: skip
    return transformers.GPTNeoForCausalLM(cfg), transformers.AutoModelForCausalLM


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.BertForMaskedLM(cfg), transformers.AutoModelForMaskedLM


def _t5():
    cfg = transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
        decoder_start_token_id=0,
    )  # fmt: skip
    return transformers.T5ForConditionalGeneration(cfg), transformers.AutoModelForSeq2SeqLM


def _save_family(tmp: Path, build) -> type:
    torch.manual_seed(0)
    model, auto = build()
    model.save_pretrained(tmp / "base")
    for i in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model.save_pretrained(tmp / f"ft{i}")
    return auto


def _recipe(tmp: Path, method: str = "ties") -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(
        f"merge_method: {method}\nbase_model: {tmp / 'base'}\nmodels:\n"
        + "".join(
            f"  - model: {tmp / f'ft{i}'}\n    parameters: {{weight: 0.5, density: 0.5}}\n"
            for i in range(2)
        )
        + "dtype: bfloat16\nshard_size: 20KB\n"
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("build", [_gptneo, _bert, _t5], ids=["gptneo", "bert", "t5"])
def test_cli_merge_loads_and_runs(tmp_path: Path, build, run_cli):
    auto = _save_family(tmp_path, build)
    argv = ["merge", str(_recipe(tmp_path)), str(tmp_path / "out"), "--no-progress"]
    code, text = run_cli(argv)
    assert code == 0, text
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded at 20KB
    card = (out / "README.md").read_text()
    assert "merge_method: ties" in card
    assert "## Resolved config" in card
    model = auto.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False) and head is not None:
        assert head.weight.data_ptr() == emb.data_ptr()
    ids = torch.tensor([[1, 2, 3, 4]])
    kwargs = {"decoder_input_ids": ids} if model.config.is_encoder_decoder else {}
    logits = model(input_ids=ids, **kwargs).logits
    assert torch.isfinite(logits.float()).all()


@pytest.mark.slow
def test_cli_dry_run_validate_ls_and_errors(tmp_path: Path, run_cli):
    _save_family(tmp_path, _gptneo)
    recipe = _recipe(tmp_path)
    code, text = run_cli(["merge", str(recipe), str(tmp_path / "out"), "--dry-run"])
    assert code == 0, text
    assert "working memory" in text
    assert not (tmp_path / "out").exists()
    code, text = run_cli(["validate", str(recipe)])
    assert code == 0, text
    code, text = run_cli(["ls"])
    assert code == 0
    assert "task_arithmetic" in text
    code, text = run_cli(["merge", str(recipe), str(tmp_path / "o"), "merge_method=tie"])
    assert code == 2
    assert "Did you mean" in text
    assert "Traceback" not in text
    argv = ["merge", str(recipe), str(tmp_path / "o"), "models.0.parameters.density=2"]
    code, text = run_cli(argv)
    assert code == 2
    assert "density: must be <= 1.0" in text


@pytest.mark.slow
def test_cli_nan_leaves_no_output(tmp_path: Path, run_cli):
    from safetensors.torch import load_file, save_file

    _save_family(tmp_path, _gptneo)
    f = tmp_path / "ft1" / "model.safetensors"
    sd = load_file(str(f))
    last = sorted(sd)[-1]
    sd[last].view(-1)[0] = float("inf")
    save_file(sd, str(f), metadata={"format": "pt"})
    code, text = run_cli(["merge", str(_recipe(tmp_path)), str(tmp_path / "out")])
    assert code == 2
    assert "Inf" in text
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
