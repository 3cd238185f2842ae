"""Fine-tuning an EMoE model (``emoe:`` in the fine-tuning config)."""

import json

import pytest
import torch
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer
from pydantic import ValidationError

from modularevo.emoe import emoe_layers, emoe_to_dense, load_emoe
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig

EMOE = {"experts": 4, "top_k": 2, "layers": [1], "assign": "greedy"}


def _cfg(tmp_path, strategy, **kw):
    return FinetuneConfig(
        model="tiny", task="tiny", strategy=strategy, lr=1e-2, max_steps=8, batch_size=8,
        eval_every=4, checkpoint_every=None, output_dir=str(tmp_path / strategy),
        progress=False, emoe=EMOE, **kw,
    )  # fmt: skip


@pytest.mark.parametrize(("strategy", "extra"), [("full", {}), ("lora", {"lora": {"r": 2}})])
def test_emoe_finetune_saves_a_model_that_load_emoe_reopens(tmp_path, strategy, extra):
    data = tiny_dataset()
    res = finetune(
        _cfg(tmp_path, strategy, **extra), model=tiny_classifier(), tokenizer=tiny_tokenizer(),
        dataset=data,
    )  # fmt: skip
    layers = emoe_layers(res.model)
    assert list(layers) == [1]
    assert (layers[1].n_experts, layers[1].top_k) == (4, 2)
    assert res.metrics["emoe"]["experts"] == 4
    meta = json.loads((res.model_dir / "emoe.json").read_text())
    assert (meta["experts"], meta["top_k"], meta["layers"]) == (4, 2, [1])
    reloaded, _tok = load_emoe(res.model_dir)
    ids = torch.tensor([[2, 5, 9, 14, 3], [2, 7, 7, 20, 3]])
    res.model.eval()
    reloaded.eval()
    with torch.no_grad():
        want = res.model(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    with torch.no_grad():
        dense = emoe_to_dense(reloaded)(input_ids=ids).logits
    assert not torch.allclose(dense, got, atol=1e-5)  # top-2 of 4 experts: routing is active


def test_emoe_with_a_module_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="masks would no longer line up"):
        FinetuneConfig(model="tiny", task="tiny", strategy="module", module="m.safetensors",
                       emoe=EMOE)  # fmt: skip
