"""``kill -9`` of a fine-tune at a random moment, then a resume: the same weights as a
straight run, bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer
from safetensors.torch import load_file

from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig

HELPERS = Path(__file__).parents[1] / "training"

RUN = f"""
import sys, time
sys.path.insert(0, {str(HELPERS)!r})
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
cfg = FinetuneConfig(**eval(sys.argv[1]))
finetune(cfg, model=tiny_classifier(), tokenizer=tiny_tokenizer(),
         dataset=tiny_dataset(n_train=48), on_step=lambda s: time.sleep(0.05))
"""


def _cfg(out: Path) -> dict:
    return dict(
        model="tiny", task="tiny", strategy="full", lr=5e-3, max_steps=24, batch_size=8,
        eval_every=4, checkpoint_every=3, patience=None, output_dir=str(out), progress=False,
    )  # fmt: skip


def _straight(out: Path):
    return finetune(FinetuneConfig(**_cfg(out)), model=tiny_classifier(),
                    tokenizer=tiny_tokenizer(), dataset=tiny_dataset(n_train=48))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_moment_then_resume_equals_the_straight_run(tmp_path, seed):
    whole = _straight(tmp_path / "whole")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", RUN, repr(_cfg(out))])
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("step-*")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 0.6))  # somewhere inside the run
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _straight(out)
    a = load_file(str(whole.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.metrics["history"] == resumed.metrics["history"]
