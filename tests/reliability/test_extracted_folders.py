"""Extracted-module folders: `import modularevo` registers their classes, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from finetune_helpers import tiny_tokenizer
from transformers import BertConfig, BertForSequenceClassification

from modularevo.deploy.extract import extract_module, save_extracted
from modularevo.modules.mask import ModuleMask


def _extracted(tmp_path):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=34, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, num_labels=3, max_position_embeddings=32)  # fmt: skip
    model = BertForSequenceClassification(cfg).eval()
    masks = {}
    for i in range(2):
        keep = torch.zeros(32, dtype=torch.bool)
        keep[:20] = True
        pre = f"bert.encoder.layer.{i}"
        masks[f"{pre}.intermediate.dense.weight"] = keep[:, None].expand(32, 16).clone()
        masks[f"{pre}.intermediate.dense.bias"] = keep.clone()
    small = extract_module(model, ModuleMask(masks=masks, domain="t"))
    return save_extracted(small, tmp_path / "small", tokenizer=tiny_tokenizer()), small


def _run(code: str) -> str:
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


@pytest.mark.slow
def test_import_modularevo_registers_classes_without_torch_at_import(tmp_path):
    out, small = _extracted(tmp_path)
    got = _run(
        "import sys\n"
        "import modularevo\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
        f"m = A.from_pretrained({str(out)!r})\n"  # no trust_remote_code
        "print(m.config.ffn_sizes)\n"
    )
    assert got == str(small.config.ffn_sizes)


def test_without_modularevo_the_folder_needs_explicit_trust(tmp_path):
    out, _ = _extracted(tmp_path)
    code = (
        "from transformers import AutoConfig\n"
        "try:\n"
        f"    AutoConfig.from_pretrained({str(out)!r})\n"
        "except ValueError as exc:\n"
        "    print('refused', 'trust_remote_code' in str(exc))\n"
    )
    assert _run(code).endswith("refused True")  # asked, not run (stdin is empty)


def test_the_project_loader_reads_an_extracted_classifier(tmp_path):
    from modularevo.io.hf_files import saved_num_labels
    from modularevo.models.load import load_model

    out, small = _extracted(tmp_path)
    model, tok = load_model(str(out), "classifier", num_labels=3)
    assert type(model).__name__ == "PrunedBertForSequenceClassification"
    assert tok is not None
    ids = torch.tensor([[2, 5, 6, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, small(input_ids=ids).logits)
    assert saved_num_labels(out) == 3  # evaluate checks the head from this, before loading
