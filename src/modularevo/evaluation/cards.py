"""Model cards (``README.md`` with Hub metadata) for the folders modularevo writes.

Every output a user may share gets one: a fine-tuned classifier, an evolved model, an
extracted module. The card says what the model is, which base and data it came from,
how it was made (the command and the resolved config) and what it scores, each accuracy
with its number of examples and 95% interval. It is written with huggingface_hub's
:class:`~huggingface_hub.ModelCard`, so the Hub and ``ModelCard.load`` read its metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from modularevo.evaluation.stats import wilson_interval

CARD_FILE = "README.md"


def metric_rows(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table rows ``| name | accuracy | n | 95% interval |`` from
    ``{name: {"accuracy": a, "n": n, ...}}`` (accuracy in [0, 1])."""
    rows = ["| evaluation | accuracy | n | 95% interval |", "|---|---|---|---|"]
    for name, r in results.items():
        acc, n = float(r["accuracy"]), int(r.get("n", 0))
        lo, hi = wilson_interval(round(acc * n), n)
        interval = f"[{100 * lo:.1f}, {100 * hi:.1f}]" if n else "—"
        rows.append(f"| {name} | {100 * acc:.2f} | {n} | {interval} |")
    return rows


def write_model_card(
    folder: str | Path,
    *,
    title: str,
    summary: str,
    base_model: str | None,
    datasets: Sequence[str] = (),
    results: Mapping[str, Mapping[str, Any]] | None = None,
    command: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """Write ``folder/README.md``.

    Args:
        folder: the model folder.
        title: the card's heading.
        summary: one paragraph: what the model is and how it was made.
        base_model: the pretrained model it descends from (a name or path).
        datasets: the datasets it was trained or evaluated on.
        results: evaluation name -> ``{"accuracy": a in [0, 1], "n": examples}``.
        command: the command that reproduces it.
        config: the resolved config, printed as YAML.
        tags: extra Hub tags (``modularevo`` is always one).

    Returns:
        The card's path.
    """
    data = ModelCardData(
        library_name="transformers",
        base_model=base_model,
        datasets=list(datasets) or None,
        tags=["modularevo", *[t for t in tags if t != "modularevo"]],
        metrics=["accuracy"] if results else None,
    )
    parts = [f"# {title}", "", summary, ""]
    if results:
        parts += ["## Results", "", *metric_rows(results), ""]
    if command:
        parts += ["## Reproduce", "", "```bash", command, "```", ""]
    if config:
        text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
        parts += ["## Resolved config", "", "```yaml", text.rstrip(), "```", ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(parts))
    path = Path(folder) / CARD_FILE
    card.save(path)
    return path
