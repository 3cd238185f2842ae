"""The non-weight files of a Hugging Face model folder: config, tokenizer, model card.

A merged model takes its ``config.json``, generation config and tokenizer files
from the base model (or another chosen source) and gets a README model card that
holds the merge recipe and the resolved config, so the merge can be reproduced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from modularevo.errors import InputError
from modularevo.io.reader import read_header

# Files copied from the source model folder next to the merged weights.
COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
)

TOKENIZER_FILES = tuple(
    n for n in COPIED_FILES if n not in ("config.json", "generation_config.json")
)
"""The tokenizer (and processor) files among :data:`COPIED_FILES`."""


def read_config(folder: Path | None) -> dict[str, Any]:
    """The ``config.json`` of ``folder`` as a dict ({} when there is none or it is unreadable)."""
    if folder is None or not (folder / "config.json").is_file():
        return {}
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def saved_num_labels(folder: str | Path) -> int | None:
    """Classes of the head saved in a model folder, read from headers only (``None``: no head).

    Looks at ``classifier_head.safetensors`` (modularevo's pooled head), else at a
    ``*ForSequenceClassification`` config's ``id2label``/``num_labels``.
    """
    folder = Path(folder)
    head = folder / "classifier_head.safetensors"
    if head.is_file():
        tensors, _ = read_header(head)
        shapes = [info.shape for name, info in tensors.items() if name.endswith("weight")]
        return int(shapes[0][0]) if shapes and shapes[0] else None
    cfg = read_config(folder if folder.is_dir() else None)
    archs = cfg.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return None
    if isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
        return len(cfg["id2label"])
    n = cfg.get("num_labels")
    return n if isinstance(n, int) else None


def check_head_fits(folder: str | Path, num_labels: int | None, task: str | None) -> None:
    """Refuse, before any weight is read, a saved head whose class count differs from the task's.

    Raises:
        InputError: naming both counts, the task the model was trained on (when its run
            folder says so) and what to do.
    """
    folder = Path(folder)
    if num_labels is None or not folder.is_dir():
        return
    have = saved_num_labels(folder)
    if have is None or have == num_labels:
        return
    trained = ""
    resolved = folder.parent / "config.resolved.yaml"
    if resolved.is_file():
        try:
            data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
            trained = (
                f" (it was fine-tuned on task {data.get('task')!r})" if data.get("task") else ""
            )
        except (OSError, yaml.YAMLError, AttributeError):
            trained = ""
    raise InputError(
        f"model {str(folder)!r} has a classification head for {have} labels{trained}, but task "
        f"{task!r} has {num_labels}; evaluate it on the task it was fine-tuned on, or fine-tune "
        f"a model for {task!r} first (`modularevo finetune ... task={task}`)"
    )


def vocab_size(config: dict[str, Any]) -> int | None:
    """``vocab_size`` of an HF config (top level or inside ``text_config``)."""
    for cfg in (config, config.get("text_config") or {}):
        v = cfg.get("vocab_size") if isinstance(cfg, dict) else None
        if isinstance(v, int):
            return v
    return None


def copy_model_files(
    src: Path | None,
    dst: Path,
    *,
    torch_dtype: str | None = None,
    names: tuple[str, ...] = COPIED_FILES,
) -> list[str]:
    """Copy config and tokenizer files from ``src`` into ``dst``.

    Args:
        src: the source model folder (``None``: nothing to copy).
        dst: the output folder.
        torch_dtype: if given, written as the config's ``dtype``/``torch_dtype``.
        names: which files to copy (default: config, generation config and tokenizer).

    Returns:
        The names of the copied files.
    """
    copied: list[str] = []
    if src is None:
        return copied
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    if torch_dtype and "config.json" in copied:
        cfg = read_config(dst)
        key = "torch_dtype" if "torch_dtype" in cfg else "dtype"
        cfg[key] = torch_dtype
        (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return copied


def model_card(
    *,
    recipe: dict[str, Any],
    resolved: dict[str, Any],
    method: str,
    paper: str,
    run: dict[str, Any],
) -> str:
    """A README.md model card: HF metadata, method, inputs, the recipe and the resolved config.

    Args:
        recipe: the config as the user wrote it (after overrides).
        resolved: the validated config with every default filled in.
        method: merge method name.
        paper: the method's paper link.
        run: run metadata (versions, git SHA, time).
    """
    models = [m["model"] for m in resolved.get("models", [])]
    base = resolved.get("base_model")
    front = {
        "library_name": "transformers",
        "tags": ["merge", "modularevo", method],
        "base_model": ([base] if base else []) + [m for m in models if m != base],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        "# Merged model",
        "",
        f"Made with [modularevo](https://github.com/) using **{method}** ({paper}).",
        "",
        f"- base model: `{base}`" if base else "- no base model",
        *[f"- merged: `{m}`" for m in models],
        "",
        "## Recipe",
        "",
        "Reproduce with `modularevo merge recipe.yaml OUT` using this YAML:",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).strip(),
        "```",
        "",
        "## Resolved config",
        "",
        "```yaml",
        yaml.safe_dump(resolved, sort_keys=False).strip(),
        "```",
        "",
        "## Run",
        "",
        "```yaml",
        yaml.safe_dump(run, sort_keys=False).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)
