"""Two CPU processes (gloo) train like one process on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_helpers import random_module, tiny_classifier
from safetensors.torch import load_file

from modularevo.training.finetune import bits_differ

WORKER = Path(__file__).parent / "ddp_finetune_worker.py"


def _launch(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    )


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    module = random_module(tiny_classifier(), tmp_path / "m.safetensors", density=0.25)
    one, two = tmp_path / "one", tmp_path / "two"
    _launch([sys.executable, str(WORKER), str(one), str(tmp_path / "m.safetensors")])
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "2", str(WORKER), str(two), str(tmp_path / "m.safetensors")])  # fmt: skip
    base = {n: p.detach() for n, p in tiny_classifier(dropout=0.0).named_parameters()}
    for strategy in ("full", "module"):
        m1 = json.loads((one / strategy / "metrics.json").read_text())
        m2 = json.loads((two / strategy / "metrics.json").read_text())
        assert (m1["num_processes"], m2["num_processes"]) == (1, 2)
        for h1, h2 in zip(m1["history"], m2["history"], strict=True):
            assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-4, abs=1e-5)
        w1 = load_file(str(one / strategy / "model" / "model.safetensors"))
        w2 = load_file(str(two / strategy / "model" / "model.safetensors"))
        for name, t in w1.items():
            torch.testing.assert_close(w2[name], t, rtol=1e-4, atol=1e-5)
            if strategy == "full" and t.ndim == 2 and "embeddings" not in name:
                assert bits_differ(w2[name], base[name]).any(), f"{name} did not train"
        if strategy == "module":
            assert m2["mask"]["out_of_mask_changed"] == 0
            for name, mask in module.masks.items():
                diff = bits_differ(w2[name], base[name])
                assert not diff[~mask.view(-1)].any(), f"out-of-mask entries of {name} moved"
