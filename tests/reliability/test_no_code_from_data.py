"""No file in an output folder can run code when a command resumes from it."""

from __future__ import annotations

import pytest
from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from conftest import plant_pickle
from modularevo.errors import InputError
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.loop import checkpoint_dirs


class _Killed(Exception):
    pass


def _cfg(out):
    return FinetuneConfig(
        model="tiny", task="tiny", strategy="full", lr=5e-3, max_steps=8, batch_size=8,
        eval_every=4, checkpoint_every=4, patience=None, output_dir=str(out), progress=False,
    )  # fmt: skip


def _go(out, on_step=None):
    return finetune(
        _cfg(out),
        model=tiny_classifier(),
        tokenizer=tiny_tokenizer(),
        dataset=tiny_dataset(n_train=48, n_eval=8),
        on_step=on_step,
    )


def _killed_run(out):
    def kill(state):
        if state.step == 5:
            raise _Killed

    with pytest.raises(_Killed):
        _go(out, on_step=kill)
    (ckpt,) = checkpoint_dirs(out / "checkpoints")
    return ckpt


# Each file Accelerate could unpickle, and whether the resume must then be refused.
PLANTED = [
    ("custom_checkpoint_0.pkl", "refused"),  # Accelerate reads it with weights_only=False
    ("optimizer.bin", "refused"),  # weights_only=True: code is refused, not run
    ("pytorch_model.bin", "refused"),  # read only when model.safetensors is missing
    ("random_states_0.pkl", "resumes"),  # our own JSON/safetensors RNG state is used
    ("scheduler.bin", "resumes"),  # never read: the scheduler is stored as JSON
]


@pytest.mark.parametrize(("name", "outcome"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_pickle_in_a_finetune_checkpoint_never_runs(tmp_path, name, outcome):
    out = tmp_path / "run"
    ckpt = _killed_run(out)
    marker = tmp_path / "PWNED"
    if name == "pytorch_model.bin":
        (ckpt / "model.safetensors").unlink()
    plant_pickle(ckpt / name, marker)
    if outcome == "refused":
        with pytest.raises(InputError, match="resume=false"):
            _go(out)
    else:
        res = _go(out)
        assert res.metrics["steps"] == 8
    assert not marker.exists()


def test_the_mnist_reader_refuses_pickled_code(tmp_path):
    import io
    import pickle

    from conftest import Payload
    from modularevo.data.images import _ArrayUnpickler

    marker = tmp_path / "PWNED"
    with pytest.raises(InputError, match="refused"):
        _ArrayUnpickler(io.BytesIO(pickle.dumps(Payload(marker)))).load()
    assert not marker.exists()


@pytest.mark.slow
def test_planted_checkpoint_in_a_modularize_output_never_runs(tmp_path, run_cli):
    """The modularizer's own checkpoint (``training/modularize_checkpoint.py``): a planted
    ``checkpoint.pt`` must be refused or ignored, never run."""
    from pathlib import Path

    out = tmp_path / "mod"
    marker = tmp_path / "PWNED"
    plant_pickle(out / "checkpoint.pt", marker)
    cfg = Path(__file__).parents[2] / "configs" / "modularize" / "tiny_test.yaml"
    code, text = run_cli(["modularize", str(cfg), f"output_dir={out}", "steps=1",
                          "max_train_texts=16", "max_val_texts=8", "eval_every=1"])  # fmt: skip
    assert not marker.exists(), text
    assert code in (0, 2), text
    assert "Traceback" not in text
