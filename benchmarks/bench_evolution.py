"""Benchmark: the paper's multi-round comparison, offline, on MiniLM (4 tasks, 3 rounds).

Runs :func:`modularevo.evolve` on ``configs/evolve/paper_minilm.yaml`` (every strategy:
base, single_task, modularevo, ft_task_arithmetic, ft_ties, ft_dare, ft_cabs), times it,
and prints a markdown summary: the command, the wall time, the last-round table, the
per-round normalized averages and the target check (ModularEvo's normalized average
minus the best baseline's, after the last round). Run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_evolution.py \
        --config configs/evolve/paper_minilm.yaml --out runs/bench_evolution.md

A killed run resumes (same ``output_dir``); the wall time then covers the resumed part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

BASELINES = ("ft_task_arithmetic", "ft_ties", "ft_dare", "ft_cabs")


def _target(rows: list[dict[str, Any]]) -> str:
    last = max(r["round"] for r in rows)
    final = {r["strategy"]: r for r in rows if r["round"] == last}
    if "modularevo" not in final or final["modularevo"]["norm_avg"] is None:
        return "target not checkable (needs modularevo and single_task)"
    me = final["modularevo"]["norm_avg"]
    base = [(final[b]["norm_avg"], b) for b in BASELINES if b in final]
    if not base:
        return "no baseline in the run"
    best, name = max(base)
    gap = me - best
    verdict = "met" if gap >= 1.0 else ("ModularEvo ahead by < 1 point" if gap >= 0 else "missed")
    return (
        f"after round {last}: ModularEvo norm avg {me:.2f} vs best baseline {name} {best:.2f} "
        f"-> difference {gap:+.2f} points (target ≥ +1.00: {verdict})"
    )


def _curves(rows: list[dict[str, Any]]) -> str:
    strategies = sorted({r["strategy"] for r in rows})
    rounds = sorted({r["round"] for r in rows if r["round"] > 0})
    lines = ["| strategy | " + " | ".join(f"r{r}" for r in rounds) + " |"]
    lines.append("|" + "---|" * (1 + len(rounds)))
    for s in strategies:
        by = {r["round"]: r["norm_avg"] for r in rows if r["strategy"] == s}
        cells = [f"{by[r]:.2f}" if by.get(r) is not None else "–" for r in rounds]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print (and optionally write) the markdown summary."""
    ap = argparse.ArgumentParser(description="multi-round evolution benchmark")
    ap.add_argument("--config", default="configs/evolve/paper_minilm.yaml")
    ap.add_argument("--out", default=None, help="also write the summary to this file")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the report and summary from the rounds completed so far (no training)",
    )
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from modularevo import evolve

    if args.report_only:
        from modularevo.evolution.loop import as_config
        from modularevo.evolution.report import write_report

        cfg = as_config(args.config, args.overrides)
        write_report(cfg.output_dir, cfg)
        print(_summary(Path(cfg.output_dir), float("nan"), "(report only)"))
        return 0
    t0 = time.perf_counter()
    run = evolve(args.config, overrides=args.overrides)
    wall = time.perf_counter() - t0
    cpu = sum(
        u.ru_utime + u.ru_stime
        for u in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_evolution.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = (
        _summary(run, wall, cmd)
        + f"\n\nCPU time (user+sys, this process and workers): {cpu / 60:.1f} min"
    )
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def _summary(run: Path, wall: float, cmd: str) -> str:
    import torch

    from modularevo.evolution.report_tables import last_round_rows, markdown_table

    rep = json.loads((run / "report" / "report.json").read_text("utf-8"))
    rows, tasks = rep["table_test"], rep["config"]["tasks"]
    cost = rep["cost"]
    evals = sum(int(c["search_evals"]) for c in cost.values())
    search_s = sum(c["search_seconds"] for c in cost.values())
    md = [
        f"Command: `{cmd}`",
        "",
        f"Wall time: {wall / 60:.1f} min on {os.cpu_count()} CPU core(s) "
        f"({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}; "
        f"λ/density search: {evals} merge+validation evaluations, {search_s / 60:.1f} min.",
        "",
        "Last round (test accuracy %, norm avg = ÷ single_task of the same round × 100):",
        "",
        markdown_table(last_round_rows(rows), tasks),
        "",
        "Normalized average (test) per round:",
        "",
        _curves(rows),
        "",
        _target(rows),
        "",
        f"Report: {run / 'report' / 'report.md'}",
    ]
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
