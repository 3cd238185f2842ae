"""Each merging strategy's last model, saved for use: a classifier folder, every task's
head, and a model card with the recipe and accuracies (``final/<strategy>/``).

A ``DONE`` marker per strategy makes the step resumable: a finished strategy is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from modularevo.evaluation.cards import write_model_card
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.runner import Workspace
from modularevo.evolution.state import RunDir


def save_finals(cfg: EvolveConfig, ws: Workspace, run: RunDir) -> None:
    """Save each merging strategy's last model: a classifier folder plus every task's head."""
    from safetensors.torch import save_file

    last = cfg.rounds
    for name in cfg.strategies:
        target = run.root / "final" / name
        merges = cfg.strategy(name).merges
        if not merges or not run.has_round(name, last) or (target / "DONE").is_file():
            continue
        state = run.read_state(name, last)
        first = cfg.tasks[0]
        model = ws.template(first)
        model.load_state_dict(state.for_task(first))
        save = getattr(model, "save_pretrained", None)
        if save is None:
            continue
        save(target / "model")
        if ws.tokenizer is not None:
            ws.tokenizer.save_pretrained(target / "model")
        for task in cfg.tasks:
            own = state.tasks.get(task, {})
            head = {k.split(".", 1)[1]: v for k, v in own.items() if k.startswith("classifier.")}
            (target / "heads").mkdir(parents=True, exist_ok=True)
            save_file(
                {k: v.contiguous() for k, v in head.items()},
                str(target / "heads" / f"{task}.safetensors"),
            )
        _final_card(cfg, run, name, target)
        (target / "DONE").write_text(json.dumps({"round": last, "model_task": first}), "utf-8")


def _final_card(cfg: EvolveConfig, run: RunDir, strategy: str, target: Path) -> None:
    """The model card of a strategy's final merged model: base, tasks, recipe, accuracies."""
    last = cfg.rounds
    rec = run.read_record(strategy, last)
    results = {}
    for task in cfg.tasks:
        for split in ("validation", "test"):
            s = rec.scores.get(task, {}).get(split, {})
            if "accuracy" in s:
                n = len(s.get("labels", [])) or int(s.get("n", 0))
                results[f"{task} ({split})"] = {"accuracy": s["accuracy"], "n": n}
    search = rec.search or {}
    chosen = {k: search[k] for k in ("lambdas", "density") if k in search}
    first = cfg.tasks[0]
    write_model_card(
        target / "model",
        title=f"{cfg.model} evolved on {', '.join(cfg.tasks)} ({strategy}, round {last})",
        summary=(
            f"The shared backbone after {last} rounds of `{strategy}` "
            f"({cfg.strategy(strategy).train} fine-tunes merged each round) starting from "
            f"`{cfg.model}`. The folder holds the classifier of `{first}`; every task's "
            f"head is in `../heads/<task>.safetensors`. Merge recipe of the last round: "
            f"{json.dumps(chosen) if chosen else 'see report/report.json'}. Full report: "
            "`report/report.md` of the run."
        ),
        base_model=cfg.model,
        datasets=list(cfg.tasks),
        results=results,
        command=f"modularevo evolve config.resolved.yaml  # from {cfg.output_dir}",
        config=cfg.model_dump(mode="json"),
        tags=["text-classification", "model-merging", f"strategy-{strategy}"],
    )
