"""MwT training on ``digits``, run folders, module extraction and their errors."""

import json
from pathlib import Path

import pytest
import torch

from modularevo.errors import ConfigError, InputError
from modularevo.mwt.config import load_mwt_config
from modularevo.mwt.models import build_model
from modularevo.mwt.reuse import evaluate_module, extract_module, load_module, parse_classes
from modularevo.mwt.train import load_images, load_run, save_model, train_mwt, train_step


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_mwt_config(None, ["model=test_vgg", "max_steps=4", "batch_size=64",
                                 "progress=false", "threshold=0.5"])  # fmt: skip
    return train_mwt(cfg, tmp_path_factory.mktemp("mwt") / "run")


def test_a_few_steps_on_digits_decrease_the_loss() -> None:
    torch.manual_seed(0)
    x, y, k = load_images("digits", "train", limit=96)
    model = build_model("test_vgg", num_classes=k)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    losses = [float(train_step(model, (x, y), opt, alpha=0.5, beta=1.5).total) for _ in range(8)]
    assert losses[-1] < losses[0] - 0.1, losses


def test_run_folder_holds_config_metrics_and_model(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()} - {"tensorboard"}  # the `curves` extra
    assert sorted(names) == ["config.resolved.yaml", "curves.json", "curves.png",
                             "metrics.jsonl", "model.safetensors"]  # fmt: skip
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 4
    assert {"ce", "cohesion_loss", "coupling_loss", "kernel_rate", "val_acc"} <= set(rows[0])
    assert rows[-1]["split"] == "test"
    model, cfg = load_run(run_dir)
    assert cfg.max_steps == 4
    assert model.num_classes == 10
    assert "seed: 0" in (run_dir / "config.resolved.yaml").read_text()


def test_extract_and_evaluate_a_three_class_module(run_dir: Path, tmp_path: Path) -> None:
    report = extract_module(run_dir, [0, 1, 2], tmp_path / "mod")
    assert 0 < report["krr"] <= 1
    assert len(report["class_modules"]["krr_per_class"]) == 10
    assert report["test_images"] > 0
    again = evaluate_module(tmp_path / "mod")
    assert again["test_acc"] == report["test_acc"]
    assert again["krr"] == report["krr"]
    module, meta = load_module(tmp_path / "mod")
    assert meta["classes"] == [0, 1, 2]
    assert module.num_classes == 3


def test_bad_class_lists_are_rejected(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown class id\(s\) \[10\]"):
        extract_module(run_dir, [0, 10], tmp_path / "a")
    with pytest.raises(InputError, match="class list is empty"):
        extract_module(run_dir, [], tmp_path / "b")
    with pytest.raises(InputError, match="comma-separated class ids"):
        parse_classes(" , ")
    with pytest.raises(InputError, match="comma-separated"):
        parse_classes("0,one")
    assert not (tmp_path / "a").exists()


def test_mismatched_checkpoint_is_rejected(run_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "config.resolved.yaml").write_text((run_dir / "config.resolved.yaml").read_text())
    other = build_model("test_resnet", num_classes=10)
    save_model(other, bad / "model.safetensors", arch="test_vgg", num_classes=10)
    with pytest.raises(InputError, match="does not match its architecture"):
        load_run(bad)
    with pytest.raises(InputError, match="not an MwT run folder"):
        load_run(tmp_path)
    with pytest.raises(InputError, match="not written by `modularevo mwt extract`"):
        load_module(bad / "model.safetensors")


def test_config_errors_list_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        load_mwt_config(None, ["model=test_vgx", "alpha=-1", "colour=red"])
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "Did you mean 'test_vgg'" in text
    assert "colour: unknown key" in text


def test_existing_output_is_not_overwritten(run_dir: Path) -> None:
    cfg = load_mwt_config(None, ["model=test_vgg", "max_steps=1", "progress=false"])
    with pytest.raises(InputError, match="already exists"):
        train_mwt(cfg, run_dir)


def test_module_without_gates_can_be_finetuned(run_dir: Path, tmp_path: Path) -> None:
    report = extract_module(run_dir, [3, 4], tmp_path / "m", keep_gates=False, finetune_epochs=1)
    assert len(report["finetune"]) == 1
    assert "test_acc_before_finetune" in report
    module, meta = load_module(tmp_path / "m")
    assert meta["keep_gates"] is False
    assert not any(p.endswith("gate.fc1.weight") for p in module.state_dict())
    assert evaluate_module(tmp_path / "m")["test_acc"] == report["test_acc"]
    with pytest.raises(InputError, match=r"threshold must lie in \(0, 1\], got 1.5"):
        extract_module(run_dir, [3], tmp_path / "t", threshold=1.5)
