"""The paper's workflow joins up from the command line (one naming of weights across stages).

modularize (masked LM) -> finetune inside the module (classifier) -> merge with the
``modularevo`` method (masks learned on the masked-LM form, fine-tunes saved as bare
encoders) -> extract a structured module from a fine-tune -> evaluate the extracted model.
"""

from __future__ import annotations

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


@pytest.mark.slow
def test_modularize_finetune_merge_extract_evaluate(tmp_path: Path, monkeypatch, run_cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mods = tmp_path / "modules"
    code, text = run_cli(["modularize", str(MODULARIZE), f"output_dir={mods}",
                          "progress=false", "structured=true"])  # fmt: skip
    assert code == 0, text
    module = mods / "module-0.5.safetensors"

    fts = []
    for seed in (0, 1):
        out = tmp_path / f"ft{seed}"
        # eval_at_start=false: the tiny model ties its start, and the merge needs a change
        code, text = run_cli(["finetune", str(FINETUNE), f"output_dir={out}", "strategy=module",
                              f"module={module}", f"seed={seed}", "max_steps=10",
                              "eval_at_start=false"])  # fmt: skip
        assert code == 0, text
        fts.append(out / "model")

    base = tmp_path / "base"
    model, tok = load_model("tiny-bert", "encoder")
    model.save_pretrained(base)
    tok.save_pretrained(base)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "merge_method: modularevo\n"
        f"base_model: {base}\n"
        "models:\n"
        + "".join(f"  - model: {ft}\n    mask: {module}\n" for ft in fts)
        + "parameters:\n  overlap: mean\n"
    )
    merged = tmp_path / "merged"
    code, text = run_cli(["merge", str(recipe), str(merged)])
    assert code == 0, text
    before, after = _tensors(base), _tensors(merged)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed, "the merge wrote the base back unchanged"

    small = tmp_path / "extracted"
    code, text = run_cli(["extract", str(module), "--model", str(fts[0]), "--out", str(small)])
    assert code == 0, text
    assert "base_model:" in (small / "README.md").read_text()  # the model card
    code, text = run_cli(["evaluate", str(small), "lang-id", "--max-examples", "16",
                          "--max-length", "32"])  # fmt: skip
    assert code == 0, text


def test_a_module_of_the_masked_lm_fits_every_kind_of_the_same_tiny_model():
    mlm, _ = load_model("tiny-bert", "masked_lm")
    clf, _ = load_model("tiny-bert", "classifier", num_labels=3)
    enc, _ = load_model("tiny-bert", "encoder")
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(mlm.state_dict()[f"bert.{name}"], clf.state_dict()[f"backbone.{name}"])
    assert torch.equal(mlm.state_dict()[f"bert.{name}"], enc.state_dict()[name])
