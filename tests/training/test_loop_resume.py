import pytest
import torch
from accelerate import Accelerator
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer
from safetensors.torch import load_file

from modularevo.errors import InputError
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.loop import checkpoint_dirs, global_batches, local_part


class _Killed(Exception):
    pass


def _cfg(out, **kw):
    return FinetuneConfig(
        model="tiny",
        task="tiny",
        strategy="full",
        lr=5e-3,
        max_steps=14,
        batch_size=8,
        eval_every=4,
        checkpoint_every=4,
        patience=None,
        output_dir=str(out),
        progress=False,
        **kw,
    )


def _go(cfg, on_step=None):
    return finetune(
        cfg,
        model=tiny_classifier(),
        tokenizer=tiny_tokenizer(),
        dataset=tiny_dataset(n_train=48),
        on_step=on_step,
    )


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    whole = _go(_cfg(tmp_path / "whole"))

    def kill(state):
        if state.step == 10:
            raise _Killed

    with pytest.raises(_Killed):
        _go(_cfg(tmp_path / "resumed"), on_step=kill)
    assert [p.name for p in checkpoint_dirs(tmp_path / "resumed" / "checkpoints")] == [
        "step-00000008"
    ]  # only the newest complete checkpoint is kept; 2 steps are lost
    seen = []
    resumed = _go(_cfg(tmp_path / "resumed"), on_step=lambda s: seen.append(s.step))
    assert seen[0] == 9  # restarted right after the checkpoint
    a = load_file(str(whole.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.metrics["history"] == resumed.metrics["history"]
    assert whole.metrics["best_step"] == resumed.metrics["best_step"]


def test_resume_with_other_settings_is_refused(tmp_path):
    with pytest.raises(_Killed):
        _go(_cfg(tmp_path / "r"), on_step=lambda s: (_ for _ in ()).throw(_Killed) if s.step == 5
            else None)  # fmt: skip
    with pytest.raises(InputError, match="lr differ"):
        _go(_cfg(tmp_path / "r").model_copy(update={"lr": 1e-3}))
    res = _go(_cfg(tmp_path / "r").model_copy(update={"lr": 1e-3, "resume": False}))
    assert res.metrics["steps"] == 14


def test_global_batches_are_seeded_and_cover_the_epoch():
    a = global_batches(10, 3, seed=1, epoch=0)
    assert a == global_batches(10, 3, seed=1, epoch=0)
    assert a != global_batches(10, 3, seed=1, epoch=1)
    assert len(a) == 3
    assert all(len(b) == 3 for b in a)
    assert len({i for b in a for i in b}) == 9
    with pytest.raises(InputError, match="fewer than one batch"):
        global_batches(2, 3, seed=0, epoch=0)


def test_local_part_splits_a_single_process_batch_unchanged():
    acc = Accelerator(cpu=True)
    assert local_part([4, 5, 6, 7], acc) == [4, 5, 6, 7]
