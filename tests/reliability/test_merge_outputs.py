"""``modularevo merge``: exclusive outputs, checked before publishing, every fault one message."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch
from merge_helpers_rel import recipe, tiny_family

from conftest import assert_one_message, lock_held_elsewhere

MERGE = ["merge", "--no-progress"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return tiny_family(tmp_path_factory.mktemp("family"))


def _merge(run_cli, rec, out, *extra):
    return run_cli([*MERGE[:1], str(rec), str(out), *MERGE[1:], *extra])


def test_overflowing_lambda_is_refused_naming_tensor_and_parameter(family, tmp_path, run_cli):
    rec = recipe(family, lam="1.0e+39", name="huge.yaml")
    code, text = _merge(run_cli, rec, tmp_path / "out")
    assert_one_message(code, text, "NaN/Inf", "lambda=1e+39", "merged tensor '")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_yaml_1e_minus_1_is_a_number(family, tmp_path, run_cli):
    code, text = _merge(run_cli, recipe(family, lam="1e-1", name="small.yaml"), tmp_path / "o")
    assert code == 0, text
    assert (tmp_path / "o" / "config.json").is_file()
    assert (tmp_path / "o" / "tokenizer.json").is_file()


def test_tokenizer_source_without_tokenizer_is_refused(family, tmp_path, run_cli):
    empty = tmp_path / "no_tok"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    rec = recipe(family, extra=f"tokenizer_source: {empty}\n", name="tok.yaml")
    code, text = _merge(run_cli, rec, tmp_path / "out")
    assert_one_message(code, text, "tokenizer_source", "no tokenizer files")
    assert not (tmp_path / "out").exists()


def test_second_merge_into_the_same_folder_needs_overwrite(family, tmp_path, run_cli):
    rec = recipe(family, name="r2.yaml")
    out = tmp_path / "out"
    assert _merge(run_cli, rec, out)[0] == 0
    first = (out / "model.safetensors.index.json").stat().st_mtime_ns
    code, text = _merge(run_cli, rec, out)
    assert_one_message(code, text, "already exists", "--overwrite")
    assert (out / "model.safetensors.index.json").stat().st_mtime_ns == first
    assert _merge(run_cli, rec, out, "--overwrite")[0] == 0
    assert not list(tmp_path.glob(".out.*"))


def test_a_running_merge_holds_its_output(family, tmp_path, run_cli):
    out = tmp_path / "out"
    with lock_held_elsewhere(out) as pid:
        code, text = _merge(run_cli, recipe(family, name="r3.yaml"), out)
        assert_one_message(code, text, "being written by another run", str(pid))
        assert not out.exists()
    assert _merge(run_cli, recipe(family, name="r3.yaml"), out)[0] == 0  # released on death


def test_leftovers_of_killed_runs_are_removed(family, tmp_path, run_cli):
    (tmp_path / ".out.tmp-dead1").mkdir()
    (tmp_path / ".out.tmp-dead1" / "model-00001-of-00001.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".out.old-12345").mkdir()
    code, text = _merge(run_cli, recipe(family, name="r4.yaml"), tmp_path / "out")
    assert code == 0, text
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


def test_outputs_follow_the_umask(family, tmp_path, run_cli):
    old = os.umask(0o022)
    try:
        assert _merge(run_cli, recipe(family, name="r5.yaml"), tmp_path / "out")[0] == 0
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_current_folder_as_output_is_refused_before_merging(family, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = _merge(run_cli, recipe(family, name="r6.yaml"), ".", "--overwrite")
    assert_one_message(code, text, "current folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_parent_is_a_file(family, tmp_path, run_cli):
    (tmp_path / "afile").write_text("x")
    code, text = _merge(run_cli, recipe(family, name="r7.yaml"), tmp_path / "afile" / "out")
    assert_one_message(code, text, "is a file, not a folder")


@pytest.mark.parametrize(
    ("err", "words"),
    [(errno.ENOSPC, "No space left"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")],
    ids=["disk-full", "read-only", "permissions"],
)
def test_os_errors_while_writing_are_one_message(
    family, tmp_path, run_cli, monkeypatch, err, words
):
    from modularevo.io import writer

    def fail(t):
        raise OSError(err, os.strerror(err), str(tmp_path / "out" / "shard"))

    monkeypatch.setattr(writer, "tensor_bytes", fail)
    code, text = _merge(run_cli, recipe(family, name="r8.yaml"), tmp_path / "out")
    assert_one_message(code, text, words, "Nothing was published")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_paths_with_square_brackets_are_printed_verbatim(tmp_path, run_cli):
    missing = tmp_path / "[bold]model[/bold]"
    rec = tmp_path / "r.yaml"
    rec.write_text(
        f"merge_method: task_arithmetic\nbase_model: {missing}\n"
        f"models:\n  - model: {missing}-a\n  - model: {missing}-b\n"
    )
    code, text = _merge(run_cli, rec, tmp_path / "out")
    assert_one_message(code, text, "[bold]model[/bold]")


def test_hidden_size_mismatch_is_not_called_a_vocabulary_mismatch(tmp_path, run_cli):
    from transformers import BertConfig, BertForMaskedLM

    for name, vocab, hidden in [("a", 64, 32), ("b", 80, 48), ("c", 64, 32)]:
        cfg = BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
        BertForMaskedLM(cfg).save_pretrained(tmp_path / name)  # fmt: skip
    rec = tmp_path / "r.yaml"
    rec.write_text(f"merge_method: task_arithmetic\nbase_model: {tmp_path / 'a'}\nmodels:\n"
                   f"  - model: {tmp_path / 'b'}\n  - model: {tmp_path / 'c'}\n")  # fmt: skip
    code, text = _merge(run_cli, rec, tmp_path / "out")
    assert_one_message(code, text, "shapes or kinds differ", "LayerNorm")
    assert "vocabulary sizes" not in text


def _module_for(family, tmp_path, base_name: str):
    from safetensors.torch import load_file

    from modularevo.modules import ModuleMask, fingerprint, save_module

    base = load_file(str(family / base_name / "model.safetensors"))
    names = [n for n in base if n.endswith("intermediate.dense.weight")]
    masks = {n: torch.rand(base[n].shape, generator=torch.Generator().manual_seed(0)) < 0.5
             for n in names}  # fmt: skip
    covered = [(n, base[n]) for n in names]
    module = ModuleMask(
        masks=masks,
        domain="t",
        arch_fingerprint=fingerprint(covered, values=False),
        base_fingerprint=fingerprint(covered),
    )
    return save_module(module, tmp_path / f"module-{base_name}.safetensors")


def test_a_module_of_another_base_is_refused_unless_allowed(family, tmp_path, run_cli):
    own = _module_for(family, tmp_path, "base")
    other = _module_for(family, tmp_path, "ft1")  # same architecture, other weights

    def rec(mask, extra=""):
        path = tmp_path / f"m-{Path(mask).stem}{len(extra)}.yaml"
        path.write_text(
            f"merge_method: modularevo\nbase_model: {family / 'base'}\nmodels:\n"
            f"  - model: {family / 'ft0'}\n    mask: {mask}\n"
            f"  - model: {family / 'ft1'}\n    mask: {mask}\ndtype: float32\n{extra}"
        )
        return path

    assert _merge(run_cli, rec(own), tmp_path / "ok")[0] == 0
    code, text = _merge(run_cli, rec(other), tmp_path / "out")
    assert_one_message(code, text, "learned on another base", "allow_other_base")
    assert not (tmp_path / "out").exists()
    code, text = _merge(run_cli, rec(other, "allow_other_base: true\n"), tmp_path / "out")
    assert code == 0, text
