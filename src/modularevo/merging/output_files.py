"""The output folder's files besides the weights: ``config.json``, tokenizer, chat template.

:func:`chat_template` decides the template the output gets (while planning);
:func:`write_config_updates` applies the plan's changes to the files copied from the
source model (after the weights are written).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from modularevo.errors import ConfigError
from modularevo.io.hf_files import TOKENIZER_FILES
from modularevo.io.reader import model_dir
from modularevo.merging.plan_types import MergePlan
from modularevo.merging.recipe_schema import MergeConfig
from modularevo.merging.tokenizer import save_tokenizer


def write_config_updates(plan: MergePlan, folder: Path) -> None:
    """Apply the plan's changes to the copied files: ``config.json``'s layer count (a
    ``slices:`` merge) or vocabulary size (tokenizer surgery), the output tokenizer
    (surgery: saved in place of the copied tokenizer files) and the recipe's
    ``chat_template``."""
    if plan.vocab is not None:
        for n in TOKENIZER_FILES:
            (folder / n).unlink(missing_ok=True)
        save_tokenizer(plan.vocab, folder)
    path = folder / "config.json"
    if plan.config_updates and path.is_file():
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg.update(plan.config_updates)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if plan.chat_template is None:
        return
    if (folder / "chat_template.jinja").is_file():  # transformers >= 4.43 reads this first
        (folder / "chat_template.jinja").write_text(plan.chat_template, encoding="utf-8")
    tok = folder / "tokenizer_config.json"
    data = json.loads(tok.read_text(encoding="utf-8")) if tok.is_file() else {}
    data["chat_template"] = plan.chat_template
    tok.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The ChatML layout (``<|im_start|>role\\n...<|im_end|>``), for ``chat_template: chatml``."""


def chat_template(config: MergeConfig, models: list[str]) -> str | None:
    """The chat template the output gets, from the recipe's ``chat_template``.

    Jinja text (it holds ``{``) is used as written; ``chatml`` is :data:`CHATML`;
    ``auto`` takes the template most of ``models`` share (mergekit 0.1.5's rule), or
    none when no model has one.

    Raises:
        ConfigError: any other name (mergekit's other built-in names are not
            supported yet; write the template's Jinja text instead).
    """
    value = config.chat_template
    if value is None or "{" in value:
        return value
    if value == "chatml":
        return CHATML
    if value == "auto":
        found = [t for t in (_model_template(m) for m in models if m) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    raise ConfigError([f"chat_template: {value!r} is not supported yet (see validate)"])


def _model_template(path: str) -> str | None:
    folder = model_dir(path)
    if folder is None:
        return None
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8").strip()
    tok = folder / "tokenizer_config.json"
    try:
        template = json.loads(tok.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(template, list):  # named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template.strip() if isinstance(template, str) else None
