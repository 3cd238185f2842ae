"""The README's "tour of the CLI", run as written on tiny models.

Each command is read from the README's tour block; only what makes it tiny is changed:
embedded ``minilm`` becomes ``tiny-bert``, output folders go under ``tmp_path``, and a few
``key=value`` overrides (which every config command takes) shrink the runs. A README
command that stops parsing, or a stage that stops joining the next, fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# overrides appended per command (later keys win over the README's own)
_TINY_MODULARIZE = ["model=tiny-bert", "steps=30", "max_train_texts=200", "max_val_texts=16",
                    "batch_size=4", "max_length=32", "eval_every=10", "eval_batches=1",
                    "structured=true", "tracker=none", "progress=false"]  # fmt: skip
_TINY = {
    ("modularize",): _TINY_MODULARIZE,
    ("finetune",): [
        "model=tiny-bert",
        "max_steps=4",
        "eval_every=2",
        "batch_size=8",
        "max_length=32",
        "max_train_examples=64",
        "max_eval_examples=32",
        "eval_at_start=false",
        "tracker=none",
        "progress=false",
    ],
    ("evolve",): [
        "model=tiny-bert",
        "tasks=[lang-id,math-type]",
        "rounds=1",
        "strategies=[base,ft_task_arithmetic]",
        "finetune.max_steps=2",
        "finetune.eval_every=2",
        "finetune.max_train_examples=32",
        "finetune.max_length=32",
        "finetune.batch_size=8",
        "max_eval_examples=16",
        "max_search_examples=16",
        "probe_steps=2",
        "search.lambdas=[1.0]",
        "search.densities=[0.5]",
        "search.refine_passes=0",
        "jobs=1",
        "tracker=none",
        "progress=false",
        "plots=false",
    ],
    ("cost",): ["batch_sizes=[1]", "seq_lens=[16]", "repeats=1", "warmup=0"],
    ("mwt", "train"): [
        "model=test_resnet",
        "max_steps=2",
        "batch_size=32",
        "progress=false",
        "tracker=none",
    ],
}


def tour_commands() -> list[list[str]]:
    """The commands of the README's tour block, comments dropped."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### A tour of the CLI\s+```bash\n(.*?)```", text, re.S)
    assert block, "the README has no tour block"
    out = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words:
            assert words[0] == "modularevo", line
            out.append(words[1:])
    return out


def _key(argv: list[str]) -> tuple[str, ...]:
    return tuple(argv[:2]) if argv[0] in ("mwt", "emoe", "data", "models") else (argv[0],)


def test_the_tour_block_is_found_and_names_every_stage():
    seen = {_key(a)[0] for a in tour_commands()}
    assert {"modularize", "finetune", "merge", "evolve", "extract", "cost"} <= seen


@pytest.mark.slow
def test_the_readme_tour_runs_as_written_on_tiny_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the tour's relative outputs (merged/, small/, runs/) land here
    mods = tmp_path / "runs" / "modularize" / "tour"
    ft = tmp_path / "runs" / "finetune" / "tour"
    module = mods / "module-0.5.safetensors"
    paths = {"module.safetensors": str(module), "finetuned/": str(ft / "model"),
             "minilm": "tiny-bert"}  # fmt: skip
    extra = {
        ("modularize",): [f"output_dir={mods}"],
        ("finetune",): [f"output_dir={ft}", f"module={module}"],
        ("evolve",): [f"output_dir={tmp_path / 'runs' / 'evolve'}"],
        ("cost",): [f"model={ft / 'model'}", "module=small/", f"out={tmp_path / 'cost'}"],
    }
    (tmp_path / "recipe.yaml").write_text(
        # an embedded name as the base (its masked-LM folder: LM head kept, pooler left out)
        "merge_method: modularevo\nbase_model: tiny-bert\nmissing_tensors: base\nmodels:\n"
        f"  - model: {ft / 'model'}\n    mask: {module}\n"
        f"  - model: {ft / 'model'}\n    mask: {module}\n    parameters: {{weight: 0.5}}\n"
    )
    ran = []
    for argv in tour_commands():
        args = [paths.get(a, a) for a in argv]
        args = [str(ROOT / a) if a.startswith("configs/") else a for a in args]
        key = _key(argv)
        if key == ("cost",):  # the shipped config is for math-type (25 labels), ours lang-id
            code, text = run_cli(args + _TINY[key] + extra[key])
            assert code == 2, text
            assert "num_labels=" in text
            assert "Traceback" not in text
            labels = json.loads((ft / "model" / "classifier.json").read_text())["num_labels"]
            args += [f"num_labels={labels}"]
        if "--dry-run" not in args:
            args += _TINY.get(key, []) + extra.get(key, [])
        elif key == ("modularize",):
            args += ["model=tiny-bert"]
        code, text = run_cli(args)
        assert code == 0, f"`modularevo {' '.join(argv)}` failed:\n{text[-3000:]}"
        ran.append(key)
    assert (tmp_path / "merged" / "README.md").is_file()
    assert (tmp_path / "small" / "config.json").is_file()
    assert (tmp_path / "runs" / "evolve" / "report" / "report.md").is_file()
    assert len(ran) == len(tour_commands())


def test_every_python_name_the_readme_gives_exists():
    import importlib

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"`(modularevo(?:\.[A-Za-z_]\w*)+)`", text)))
    assert "modularevo.finetune" in names
    missing = []
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
    assert not missing, missing
