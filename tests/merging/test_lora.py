"""LoRA adapters (PEFT folders) as merge inputs, and ``extract_lora`` of a fine-tune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from merge_helpers import read_output

from modularevo.errors import InputError
from modularevo.merging.apply import merge
from modularevo.merging.lora import extract_lora, lora_factors, lora_scaling, read_adapter

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _bert_config():
    return transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=16,
    )  # fmt: skip


def _sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT base, a full fine-tune of it (every float tensor moved) and a PEFT
    LoRA adapter trained-like (random A and B) on the base, as folders."""
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    base = transformers.BertModel(_bert_config())
    base.save_pretrained(root / "base")
    ft = transformers.BertModel(_bert_config())
    ft.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ft.save_pretrained(root / "ft")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"],
                          rank_pattern={"intermediate.dense": 2})  # fmt: skip
    pm = peft.get_peft_model(transformers.BertModel.from_pretrained(root / "base"), cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(root / "adapter")
    merged = pm.merge_and_unload()
    merged.save_pretrained(root / "materialised")
    return {"root": root, "base": root / "base", "ft": root / "ft", "adapter": root / "adapter",
            "materialised": root / "materialised"}  # fmt: skip


def _load_extracted(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    model = peft.PeftModel.from_pretrained(transformers.BertModel.from_pretrained(base), adapter)
    return _sd(model.merge_and_unload())


def test_extract_lora_at_full_rank_reproduces_the_fine_tune(tiny, tmp_path: Path):
    report = extract_lora(tiny["base"], tiny["ft"], tmp_path / "lora", rank=64)
    assert report.relative_error < 1e-5
    assert report.matrices == 2 * 6 + 3 + 1  # 6 Linears per layer, 3 embeddings, the pooler
    got = _load_extracted(tiny["base"], tmp_path / "lora")
    want = _sd(transformers.BertModel.from_pretrained(tiny["ft"]))
    assert set(got) == set(want)
    for name, t in want.items():
        torch.testing.assert_close(got[name], t, atol=2e-5, rtol=0, msg=name)
    cfg = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"
    assert cfg["bias"] == "all"
    assert cfg["modules_to_save"]


def test_extract_lora_at_low_rank_is_the_truncated_svd(tiny, tmp_path: Path):
    report = extract_lora(tiny["base"], tiny["ft"], tmp_path / "r2", rank=2, lora_only=True)
    assert 0.3 < report.relative_error < 1.0
    assert report.full_tensors == 0
    got = _load_extracted(tiny["base"], tmp_path / "r2")
    base = _sd(transformers.BertModel.from_pretrained(tiny["base"]))
    ft = _sd(transformers.BertModel.from_pretrained(tiny["ft"]))
    name = "encoder.layer.0.attention.self.query.weight"
    delta = got[name] - base[name]
    assert torch.linalg.matrix_rank(delta, atol=1e-5) == 2
    u, s, vh = torch.linalg.svd(ft[name] - base[name])
    torch.testing.assert_close(delta, (u[:, :2] * s[:2]) @ vh[:2], atol=1e-5, rtol=0)
    ln = "encoder.layer.0.output.LayerNorm.weight"
    torch.testing.assert_close(got[ln], base[ln])  # lora_only: LayerNorm left at the base
    with pytest.raises(InputError, match="exists"):
        extract_lora(tiny["base"], tiny["ft"], tmp_path / "r2", rank=2)
    with pytest.raises(InputError, match="rank must be at least 1"):
        extract_lora(tiny["base"], tiny["ft"], tmp_path / "r0", rank=0)


def test_lora_factors_split_the_singular_values_evenly():
    delta = torch.diag(torch.tensor([4.0, 1.0, 0.0]))[:, :2]  # (3, 2)
    a, b = lora_factors(delta, 1)
    torch.testing.assert_close(b @ a, torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(a.norm(), b.norm())


def test_adapter_read_as_scaled_b_a_with_rank_pattern(tiny):
    cfg = json.loads((tiny["adapter"] / "adapter_config.json").read_text())
    assert lora_scaling(cfg, "encoder.layer.0.attention.self.query") == 2.0  # 8 / 4
    assert lora_scaling(cfg, "encoder.layer.1.intermediate.dense") == 4.0  # 8 / 2
    base = _sd(transformers.BertModel.from_pretrained(tiny["base"]))
    update = read_adapter(tiny["adapter"], base)
    want = _sd(transformers.BertModel.from_pretrained(tiny["materialised"]))
    for name, delta in update.deltas.items():
        torch.testing.assert_close(base[name] + delta, want[name], atol=1e-6, rtol=0)
    assert len(update.deltas) == 2 * 6 - 2 * 2 + 1 + 2 * 1  # query/value/dense (+pooler)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_merge_with_a_lora_input_equals_the_merge_of_the_materialised_model(
    tiny, tmp_path: Path, method: str
):
    def recipe(second: Path) -> dict:
        return {
            "merge_method": method, "base_model": str(tiny["base"]), "dtype": "float32",
            "models": [{"model": str(tiny["ft"]), "parameters": {"weight": 0.6}},
                       {"model": str(second), "parameters": {"weight": 0.8}}],
            **({"parameters": {"density": 0.5}} if method == "ties" else {}),
        }  # fmt: skip

    merge(recipe(tiny["adapter"]), tmp_path / "with_lora", progress=False)
    merge(recipe(tiny["materialised"]), tmp_path / "with_model", progress=False)
    got, want = read_output(tmp_path / "with_lora"), read_output(tmp_path / "with_model")
    assert set(got) == set(want)
    for name, t in want.items():
        torch.testing.assert_close(got[name], t, atol=1e-6, rtol=0, msg=name)
    ta = read_output(tmp_path / "with_lora")["encoder.layer.0.attention.self.query.weight"]
    base = _sd(transformers.BertModel.from_pretrained(tiny["base"]))
    assert not torch.allclose(ta, base["encoder.layer.0.attention.self.query.weight"])


def test_a_lora_input_without_a_base_or_on_the_wrong_base_is_refused(tiny, tmp_path: Path):
    hub = tmp_path / "hub_adapter"
    shutil.copytree(tiny["adapter"], hub)
    cfg = json.loads((hub / "adapter_config.json").read_text())
    (hub / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "org/not-a-folder"})
    )
    recipe = {"merge_method": "linear", "models": [{"model": str(hub)},
                                                   {"model": str(tiny["ft"])}]}  # fmt: skip
    with pytest.raises(InputError, match="needs its base model"):
        merge(recipe, tmp_path / "out", progress=False)
    other = tmp_path / "other"
    torch.manual_seed(3)
    gpt2 = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    transformers.GPT2Model(gpt2).save_pretrained(other)
    recipe = {"merge_method": "task_arithmetic", "base_model": str(other),
              "models": [{"model": str(tiny["adapter"])}]}  # fmt: skip
    with pytest.raises(InputError, match="match no tensor of its base"):
        merge(recipe, tmp_path / "out2", progress=False)


def test_extract_lora_cli_writes_an_adapter_and_reports_its_error(tiny, tmp_path: Path, run_cli):
    out = tmp_path / "cli_lora"
    code, text = run_cli(["extract-lora", str(tiny["base"]), str(tiny["ft"]), str(out), "-r", "3"])
    assert code == 0, text
    assert "16 LoRA matrices" in text
    assert "relative error" in text
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 3
    code, text = run_cli(["extract-lora", str(tiny["base"]), str(tiny["ft"]), str(out), "-r", "3"])
    assert code == 2
    assert "exists" in text
