"""``finetune`` outputs: one run per folder, ``overwrite`` clears the stale results first,
files follow the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from conftest import lock_held_elsewhere
from modularevo.errors import InputError
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig


class _Killed(Exception):
    pass


def _go(out, on_step=None, **kw):
    cfg = FinetuneConfig(
        model="tiny", task="tiny", strategy="full", lr=5e-3, max_steps=4, batch_size=8,
        eval_every=2, checkpoint_every=2, patience=None, output_dir=str(out), progress=False,
        **kw,
    )  # fmt: skip
    return finetune(cfg, model=tiny_classifier(), tokenizer=tiny_tokenizer(),
                    dataset=tiny_dataset(n_train=32, n_eval=8), on_step=on_step)  # fmt: skip


def test_overwrite_removes_the_finished_results_before_training(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        _go(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "model").stat().st_mode) == 0o755
    with pytest.raises(InputError, match="overwrite=true"):
        _go(out)
    seen = {}

    def kill(state):
        seen["files"] = sorted(p.name for p in out.iterdir())
        raise _Killed

    with pytest.raises(_Killed):
        _go(out, on_step=kill, overwrite=True)
    assert "metrics.json" not in seen["files"]
    assert "model" not in seen["files"]
    assert not (out / "metrics.json").exists()  # a killed overwrite never looks finished


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    with lock_held_elsewhere(out), pytest.raises(InputError, match="being written by another run"):
        _go(out)
    assert _go(out).metrics["steps"] == 4


def test_equal_modules_are_equal_bytes_across_processes(tmp_path):
    code = (
        "import sys, torch\n"
        "from modularevo.modules import ModuleMask, save_module\n"
        "m = ModuleMask(masks={'b.weight': torch.ones(3, 2, dtype=torch.bool),\n"
        "                      'a.weight': torch.zeros(4, dtype=torch.bool)}, domain='math')\n"
        "save_module(m, sys.argv[1])\n"
    )
    for i in range(3):
        env = {**os.environ, "PYTHONHASHSEED": str(i)}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"m{i}.safetensors")],
                       check=True, env=env)  # fmt: skip
    first = (tmp_path / "m0.safetensors").read_bytes()
    assert all((tmp_path / f"m{i}.safetensors").read_bytes() == first for i in (1, 2))
