"""The paper's workflow joins up from the command line (one naming of weights across stages).

modularize (masked LM) -> finetune inside the module (classifier) -> merge with the
``modularevo`` method (masks learned on the masked-LM form, fine-tunes saved as bare
encoders) -> extract a structured module from a fine-tune -> evaluate the extracted model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modularevo.models.load import load_model

ROOT = Path(__file__).resolve().parents[2]
MODULARIZE = ROOT / "configs" / "modularize" / "tiny_test.yaml"
FINETUNE = ROOT / "configs" / "finetune" / "tiny_test.yaml"


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _user_bert(folder: Path) -> str:
    """A user's own small model: a random BERT saved with ``save_pretrained`` (not embedded)."""
    from transformers import BertConfig, BertForMaskedLM

    _, tok = load_model("tiny-bert", "encoder")
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
    )
    torch.manual_seed(7)
    BertForMaskedLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["embedded", "user"])
def test_modularize_finetune_merge_extract_evaluate(
    tmp_path: Path, monkeypatch, run_cli, source: str
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if source == "embedded":
        name = "tiny-bert"
        base = tmp_path / "base"  # the base as its encoder, saved by the user
        model, tok = load_model("tiny-bert", "encoder")
        model.save_pretrained(base)
        tok.save_pretrained(base)
    else:
        name = _user_bert(tmp_path / "my-bert")
        base = Path(name)  # the masked-LM folder itself: another naming of the same weights
    mods = tmp_path / "modules"
    code, text = run_cli(["modularize", str(MODULARIZE), f"output_dir={mods}", f"model={name}",
                          "progress=false", "structured=true", "tracker=none"])  # fmt: skip
    assert code == 0, text
    module = mods / "module-0.5.safetensors"

    fts = []
    for seed in (0, 1):
        out = tmp_path / f"ft{seed}"
        # eval_at_start=false: the tiny model ties its start, and the merge needs a change
        code, text = run_cli(["finetune", str(FINETUNE), f"output_dir={out}", f"model={name}",
                              "strategy=module", f"module={module}", f"seed={seed}",
                              "max_steps=10", "eval_at_start=false", "tracker=none"])  # fmt: skip
        assert code == 0, text
        fts.append(out / "model")

    recipe = tmp_path / "recipe.yaml"
    # the masked-LM base has an LM head the fine-tunes lack, they a pooler it lacks
    heads = "missing_tensors: base\n" if source == "user" else ""
    recipe.write_text(
        "merge_method: modularevo\n" + heads + f"base_model: {base}\n"
        "models:\n"
        + "".join(f"  - model: {ft}\n    mask: {module}\n" for ft in fts)
        + "parameters:\n  overlap: mean\n"
    )
    merged = tmp_path / "merged"
    code, text = run_cli(["merge", str(recipe), str(merged)])
    assert code == 0, text
    before, after = _tensors(base), _tensors(merged)
    shared = [n for n in after if n in before]
    assert shared, "the merged model shares no tensor name with its base"
    changed = [n for n in shared if not torch.equal(before[n], after[n])]
    assert changed, "the merge wrote the base back unchanged"

    # a merge of the base with a copy of itself would write the base back: refused
    copy = tmp_path / "copy-of-base"
    shutil.copytree(base, copy)
    same = tmp_path / "same.yaml"
    same.write_text(
        f"merge_method: task_arithmetic\nbase_model: {base}\n"
        f"models:\n  - model: {copy}\n    parameters:\n      weight: 1.0\n"
    )
    code, text = run_cli(["merge", str(same), str(tmp_path / "same")])
    assert code == 2, text
    assert "unchanged" in text
    assert not (tmp_path / "same").exists()

    small = tmp_path / "extracted"
    code, text = run_cli(["extract", str(module), "--model", str(fts[0]), "--out", str(small)])
    assert code == 0, text
    assert "base_model:" in (small / "README.md").read_text()  # the model card
    code, text = run_cli(["evaluate", str(small), "lang-id", "--max-examples", "16",
                          "--max-length", "32"])  # fmt: skip
    assert code == 0, text
    assert "accuracy" in text.lower()


def test_a_module_of_the_masked_lm_fits_every_kind_of_the_same_tiny_model():
    mlm, _ = load_model("tiny-bert", "masked_lm")
    clf, _ = load_model("tiny-bert", "classifier", num_labels=3)
    enc, _ = load_model("tiny-bert", "encoder")
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(mlm.state_dict()[f"bert.{name}"], clf.state_dict()[f"backbone.{name}"])
    assert torch.equal(mlm.state_dict()[f"bert.{name}"], enc.state_dict()[name])
