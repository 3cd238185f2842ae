"""``modularevo emoe convert`` and ``inspect`` on a tiny BERT, in-process."""

from __future__ import annotations

import json

import pytest

from modularevo.cli.emoe import parse_layers
from modularevo.errors import ConfigError


def test_convert_then_inspect_tiny_bert(tmp_path, run_cli):
    out = tmp_path / "emoe"
    args = ["emoe", "convert", "tiny-bert", str(out), "-E", "4", "-k", "2", "--layers", "1"]
    code, text = run_cli(args)
    assert code == 0, text
    assert "4 experts of 16 neurons" in text
    meta = json.loads((out / "emoe.json").read_text())
    assert (meta["experts"], meta["top_k"], meta["layers"]) == (4, 2, [1])
    assert (out / "tokenizer_config.json").is_file()
    code, text = run_cli(["emoe", "inspect", str(out), "--text", "hello there"])
    assert code == 0, text
    assert "model output cosine" in text


def test_convert_errors_exit_2_with_message(tmp_path, run_cli):
    code, text = run_cli(["emoe", "convert", "tiny-bert", str(tmp_path / "x"), "-E", "5"])
    assert code == 2
    assert "does not divide 64" in " ".join(text.split())
    assert not (tmp_path / "x").exists()


def test_parse_layers():
    assert parse_layers("10,11") == [10, 11]
    assert parse_layers("-1") == [-1]
    assert parse_layers("last2") == "last2"
    with pytest.raises(ConfigError, match="expected '10,11'"):
        parse_layers("1,x")


def test_convert_reads_yaml_config_and_flags_override(tmp_path, run_cli):
    cfg = tmp_path / "emoe.yaml"
    cfg.write_text("experts: 8\ntop_k: 2\nlayers: [0]\nassign: greedy\n")
    out = tmp_path / "emoe"
    code, text = run_cli(["emoe", "convert", "tiny-gptneo", str(out), "-c", str(cfg), "-k", "3"])
    assert code == 0, text
    meta = json.loads((out / "emoe.json").read_text())
    assert (meta["experts"], meta["top_k"], meta["layers"]) == (8, 3, [0])
    cfg.write_text("experts: 8\ntop_k: 2\nrouter: cosine\n")
    code, text = run_cli(["emoe", "convert", "tiny-bert", str(tmp_path / "y"), "-c", str(cfg)])
    assert code == 2
    assert "router: unknown key" in text
