import json

import pytest
import torch
from finetune_helpers import random_module, tiny_classifier, tiny_dataset, tiny_tokenizer
from transformers import BertForSequenceClassification

from modularevo.config import validate
from modularevo.errors import ConfigError, InputError
from modularevo.training.finetune import bits_differ, finetune
from modularevo.training.finetune_config import FinetuneConfig, TrainShard
from modularevo.training.finetune_data import shard_indices


def _cfg(tmp_path, strategy, **kw):
    base = {
        "model": "tiny",
        "task": "tiny",
        "strategy": strategy,
        "lr": 1e-2,
        "max_steps": 12,
        "batch_size": 8,
        "eval_every": 6,
        "checkpoint_every": None,
        "weight_decay": 0.1,
        "eval_at_start": False,  # the tiny model ties its start; these tests check training
        "output_dir": str(tmp_path / strategy),
        "progress": False,
    }
    base.update(kw)
    return FinetuneConfig(**base)


def _run(tmp_path, strategy, **kw):
    base = tiny_classifier()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    res = finetune(
        _cfg(tmp_path, strategy, **kw),
        model=base,
        tokenizer=tiny_tokenizer(),
        dataset=tiny_dataset(),
    )
    after = dict(BertForSequenceClassification.from_pretrained(res.model_dir).named_parameters())
    in_place = dict(base.named_parameters())  # the passed-in model ends with the saved weights
    assert set(in_place) == set(after)
    assert res.model is not None  # the result carries the same model
    returned = dict(res.model.named_parameters())
    assert set(returned) == set(after)
    for name, p in after.items():
        assert torch.equal(in_place[name].detach(), p.detach()), name
        assert torch.equal(returned[name].detach(), p.detach()), name
    return res, before, {n: p.detach() for n, p in after.items()}


def test_module_strategy_changes_only_in_mask_weights_and_head(tmp_path):
    module = random_module(tiny_classifier(), tmp_path / "m.safetensors", density=0.25)
    res, before, after = _run(tmp_path, "module", module=str(tmp_path / "m.safetensors"))
    for name, b in before.items():
        diff = bits_differ(after[name], b)
        if name in module.masks:
            mask = module.masks[name].view(-1)
            assert not diff[~mask].any(), f"out-of-mask entries of {name} changed"
            if name.endswith("weight"):
                assert diff[mask].float().mean() > 0.9, f"in-mask entries of {name} did not train"
        elif name.startswith(("classifier", "bert.pooler")):  # heads per models.arch.describe
            assert diff.all(), f"the task head must train ({name})"
        else:  # embeddings, LayerNorms, pooler: no mask entry -> frozen
            assert not diff.any(), f"{name} has no mask entry and must stay frozen"
    assert res.metrics["mask"]["out_of_mask_changed"] == 0
    assert 0.2 < res.metrics["mask"]["density"] < 0.3


def test_full_strategy_trains_every_matrix_and_writes_outputs(tmp_path):
    res, before, after = _run(tmp_path, "full")
    for name, b in before.items():
        if b.ndim == 2 and "embeddings" not in name:
            assert bits_differ(after[name], b).float().mean() > 0.9, name
    written = json.loads((res.output_dir / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert set(written[split]) >= {"accuracy", "macro_f1", "loss", "n"}
        assert written[split]["n"] == 24
    assert written["best_step"] in (6, 12)
    assert (res.output_dir / "config.resolved.yaml").is_file()
    assert not (res.output_dir / "checkpoints").exists()
    with pytest.raises(InputError, match="already holds a finished run"):
        finetune(
            _cfg(tmp_path, "full"),
            model=tiny_classifier(),
            tokenizer=tiny_tokenizer(),
            dataset=tiny_dataset(),
        )


def test_lora_is_merged_back_into_a_dense_model(tmp_path):
    _res, before, after = _run(tmp_path, "lora", lora={"r": 2, "alpha": 4})
    assert set(after) == set(before)  # no adapter tensors left
    q = "bert.encoder.layer.0.attention.self.query.weight"
    delta = after[q] - before[q]
    assert delta.abs().max() > 0
    assert torch.linalg.matrix_rank(delta) <= 2  # a rank-r update
    assert not bits_differ(
        after["bert.embeddings.word_embeddings.weight"],
        before["bert.embeddings.word_embeddings.weight"],
    ).any()
    assert bits_differ(after["classifier.weight"], before["classifier.weight"]).all()


def test_module_for_another_model_is_rejected(tmp_path):
    random_module(tiny_classifier(seed=5), tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="different base model"):
        _run(tmp_path, "module", module=str(tmp_path / "other.safetensors"))
    res, _, _ = _run(
        tmp_path,
        "module",
        module=str(tmp_path / "other.safetensors"),
        allow_modified_base=True,
        output_dir=str(tmp_path / "allowed"),
    )
    assert res.metrics["mask"]["out_of_mask_changed"] == 0


def test_config_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        validate(
            FinetuneConfig,
            {
                "model": "m",
                "task": "t",
                "lr": -1,
                "batch": 3,
                "train_shard": {"index": 3, "count": 3},
            },
        )
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "lr" in text
    assert "index 3 must be < count 3" in text
    assert "batch: unknown key" in text
    with pytest.raises(ConfigError, match="needs `module"):
        validate(FinetuneConfig, {"model": "m", "task": "t", "strategy": "module"})
    with pytest.raises(ConfigError, match="only used by strategy 'module'"):
        validate(FinetuneConfig, {"model": "m", "task": "t", "strategy": "full", "module": "x"})


def test_train_shards_are_disjoint_and_cover_the_split():
    parts = [shard_indices(10, TrainShard(index=i, count=3, seed=1)) for i in range(3)]
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == 9
    assert all(len(p) == 3 for p in parts)
    assert parts == [shard_indices(10, TrainShard(index=i, count=3, seed=1)) for i in range(3)]
