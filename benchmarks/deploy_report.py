"""Tables, verdicts and the frontier plot of ``bench_deploy.py``, from its JSON records.

Accuracy differences are paired: the module and the dense model are scored on the same
test examples, and one bootstrap resample of the examples serves both (95% percentile
interval, ``n_boot`` draws). The target per task (issue 16): some module at least 2.5x
faster than the dense model at batch 8 in the same runtime, with at most 1 point lost
against *both* dense references (the plateau model, and the one trained as long as the
module), the stricter of the two deciding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modularevo.evaluation.stats import interval, paired_difference

TARGET_SPEEDUP = 2.5
TARGET_LOSS = 1.0


def _correct(preds: list[int], labels: list[int]) -> np.ndarray:
    return (np.asarray(preds) == np.asarray(labels)).astype(np.float64)


def _draws(correct: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Accuracy (%) on ``n_boot`` resamples of the examples; the same resamples per seed."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    return 100.0 * correct[idx].mean(axis=1)


def accuracy_rows(records: dict, n_boot: int, seed: int) -> list[dict]:
    """One row per (task, module size): accuracies and the paired differences."""
    rows = []
    for task, rec in records["tasks"].items():
        labels = rec["dense"]["labels"]
        refs = {"dense": _correct(rec["dense"]["preds"], labels)}
        if "dense_more" in rec:
            refs["dense_more"] = _correct(rec["dense_more"]["preds"], labels)
        ref_draws = {k: _draws(c, n_boot, seed) for k, c in refs.items()}
        for name, mod in rec["modules"].items():
            c = _correct(mod["preds"], labels)
            d = _draws(c, n_boot, seed)
            row = {
                "task": task,
                "size": name,
                "n": len(labels),
                "params": (rec["dense"]["params"], mod["params"]),
                "acc": 100.0 * c.mean(),
                "acc_ci": interval(d),
                "acc_before_ft": 100.0 * _correct(mod["preds_before_ft"], labels).mean(),
                "refs": {k: 100.0 * v.mean() for k, v in refs.items()},
                "diff": {
                    k: paired_difference(d, ref_draws[k], 100.0 * (c.mean() - v.mean()))
                    for k, v in refs.items()
                },
                "speedup": speedups(rec.get("latency"), name),
            }
            row["worst"] = min(row["diff"].values(), key=lambda x: x["diff"])
            rows.append(row)
    return rows


def speedups(latency: dict | None, name: str) -> dict[str, float]:
    """Dense median / module median per ``runtime/batch`` (e.g. ``torch/8``)."""
    if not latency:
        return {}
    out = {}
    for b in (1, 8):
        point = latency[f"batch{b}"]
        for runtime in sorted({k.split("/")[0] for k in point}):
            mod = point.get(f"{runtime}/{name}")
            if mod is not None:
                out[f"{runtime}/{b}"] = point[f"{runtime}/dense"]["median_ms"] / mod["median_ms"]
    return out


def _fmt_diff(d: dict) -> str:
    return f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def report_markdown(records: dict, n_boot: int, seed: int) -> str:
    rows = accuracy_rows(records, n_boot, seed)
    lines = [
        f"CPU: {records['cpu']}. Test accuracy in %, full test splits; differences are the "
        f"module minus the dense reference, paired bootstrap 95% interval ({n_boot} draws). "
        "Speed-up: dense median latency / module median latency, batch 8, seq len "
        f"{records['args'].get('max_len', '?')}, same runtime, interleaved.",
        "",
        "| task | n | module (FFN/heads) | params | dense | dense, same budget | module [95%] "
        "| before recovery | Δ vs dense [95%] | Δ vs same budget [95%] | torch ×, b1 / b8 "
        "| ORT ×, b8 | ORT int8 ×, b8 |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["speedup"]

        def sp(key: str, s: dict = s) -> str:
            return f"{s[key]:.2f}" if key in s else "–"

        more = r["refs"].get("dense_more")
        lines.append(
            f"| {r['task']} | {r['n']} | {r['size']} "
            f"| {r['params'][0] / 1e6:.1f}M → {r['params'][1] / 1e6:.1f}M "
            f"| {r['refs']['dense']:.2f} | {'–' if more is None else f'{more:.2f}'} "
            f"| {r['acc']:.2f} [{r['acc_ci'][0]:.1f}, {r['acc_ci'][1]:.1f}] "
            f"| {r['acc_before_ft']:.2f} | {_fmt_diff(r['diff']['dense'])} "
            f"| {_fmt_diff(r['diff']['dense_more']) if 'dense_more' in r['diff'] else '–'} "
            f"| {sp('torch/1')} / {sp('torch/8')} | {sp('ort/8')} | {sp('ort-int8/8')} |"
        )
    lat = latency_markdown(records)
    sel = selection_markdown(records)
    return "\n".join(lines) + "\n" + ("\n" + sel if sel else "") + ("\n" + lat if lat else "")


def _selected_runs(rec: dict) -> list[tuple[str, int, dict]]:
    """(name, steps trained, selection) of the task's runs selected on validation."""
    runs = []
    more = rec.get("dense_more")
    if more and more.get("selected"):
        runs.append(("dense, same budget", more["steps"], more["selected"]))
    for name, mod in rec["modules"].items():
        if mod.get("selected"):
            runs.append((f"{name} recovery", mod.get("recovery_steps", "?"), mod["selected"]))
    return runs


def selection_markdown(records: dict) -> str:
    """Where each run selected on validation stopped: the chosen step and its score."""
    lines = []
    for task, rec in records["tasks"].items():
        for name, steps, sel in _selected_runs(rec):
            if not lines:
                lines = [
                    "Selection on the validation split (scored at the start and every "
                    "`--eval-every` steps; the best point kept, the earliest of ties):",
                    "",
                    "| task | run | steps trained | selected step | validation % at start "
                    "| selected validation % |",
                    "|---|---|---:|---:|---:|---:|",
                ]
            lines.append(
                f"| {task} | {name} | {steps} | {sel['selected_step']} "
                f"| {sel['val_curve'][0][1]:.2f} | {sel['val_acc']:.2f} |"
            )
    return "\n".join(lines) + ("\n" if lines else "")


def curves_plot(records: dict, path: Path) -> Path | None:
    """Per task: validation accuracy against steps of every run selected on validation,
    the selected point marked."""
    tasks = [(t, _selected_runs(rec)) for t, rec in records["tasks"].items()]
    tasks = [(t, runs) for t, runs in tasks if runs]
    if not tasks:
        return None
    fig, axes = _panels(len(tasks), 3.6)
    for ax, (task, runs) in zip(axes, tasks, strict=True):
        for name, _, sel in runs:
            x, y = zip(*sel["val_curve"], strict=True)
            (line,) = ax.plot(x, y, "-", marker=".", label=name)
            ax.plot([sel["selected_step"]], [sel["val_acc"]], "*", ms=12, color=line.get_color())
        ax.set_title(task)
        ax.set_xlabel("steps of this run")
        ax.set_ylabel("validation accuracy (%)")
        ax.legend(fontsize=8)
    return _save(fig, path, "Validation curves; ★ = the point kept")


def _panels(n: int, height: float):
    """A figure of ``n`` panels side by side (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, height), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def latency_markdown(records: dict) -> str:
    """Per task, runtime and batch: every variant's median (IQR) ms."""
    lines = []
    for task, rec in records["tasks"].items():
        lat = rec.get("latency")
        if not lat:
            continue
        if not lines:
            lines = [
                f"Latency, ms: median (IQR) of {lat['repeats']} interleaved timed runs after 3 "
                f"warm-up runs, {lat['threads']} thread(s), seq len {lat['seq_len']}.",
                "",
                "| task | runtime | batch | variant | median ms (IQR) | speed-up |",
                "|---|---|---:|---|---:|---:|",
            ]
        for b in (1, 8):
            point = lat[f"batch{b}"]
            for key, v in point.items():
                runtime, name = key.split("/")
                dense = point[f"{runtime}/dense"]["median_ms"]
                lines.append(
                    f"| {task} | {runtime} | {b} | {name} | {v['median_ms']:.1f} "
                    f"({v['iqr_ms']:.1f}) | {dense / v['median_ms']:.2f}× |"
                )
    return "\n".join(lines) + ("\n" if lines else "")


def verdicts(records: dict, n_boot: int, seed: int) -> list[str]:
    """Per task: the modules that meet the target, else the closest one."""
    rows = accuracy_rows(records, n_boot, seed)
    out = []
    for task in records["tasks"]:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            out.append(f"{task}: no module yet")
            continue

        def fast(r: dict) -> tuple[str, float] | None:
            best = max(
                ((k, v) for k, v in r["speedup"].items() if k.endswith("/8")),
                key=lambda kv: kv[1],
                default=None,
            )
            return best

        met = []
        for r in mine:
            f = fast(r)
            if f and f[1] >= TARGET_SPEEDUP and r["worst"]["diff"] >= -TARGET_LOSS:
                met.append((r, f))
        if met:
            r, f = max(met, key=lambda rf: rf[1][1])
            out.append(
                f"{task}: target met by {r['size']}: {f[1]:.2f}x at batch 8 "
                f"({f[0].split('/')[0]}), "
                f"{_fmt_diff(r['worst'])} points against the stricter dense reference"
            )
        else:
            r = max(mine, key=lambda r: r["worst"]["diff"])
            f = fast(r)
            speed = f"{f[1]:.2f}x at batch 8 ({f[0].split('/')[0]})" if f else "not timed"
            out.append(
                f"{task}: target missed; closest {r['size']}: {speed}, "
                f"{_fmt_diff(r['worst'])} points against the stricter dense reference"
            )
    return out


def frontier_plot(records: dict, path: Path, n_boot: int, seed: int) -> Path | None:
    """Per task: accuracy difference (stricter reference, 95% interval) against the batch-8
    speed-up in PyTorch (filled) and ONNX Runtime (open), the target box shaded."""
    rows = [r for r in accuracy_rows(records, n_boot, seed) if "torch/8" in r["speedup"]]
    if not rows:
        return None
    tasks = sorted({r["task"] for r in rows})
    fig, axes = _panels(len(tasks), 3.8)
    for ax, task in zip(axes, tasks, strict=True):
        mine = sorted((r for r in rows if r["task"] == task), key=lambda r: r["speedup"]["torch/8"])
        for marker, runtime, fill in (("o", "torch", True), ("s", "ort", False)):
            pts = [r for r in mine if f"{runtime}/8" in r["speedup"]]
            if not pts:
                continue
            x = [r["speedup"][f"{runtime}/8"] for r in pts]
            y = [r["worst"]["diff"] for r in pts]
            err = [
                [yy - r["worst"]["lo"] for yy, r in zip(y, pts, strict=True)],
                [r["worst"]["hi"] - yy for yy, r in zip(y, pts, strict=True)],
            ]
            ax.errorbar(
                x,
                y,
                yerr=err,
                fmt=marker + "-",
                mfc=None if fill else "none",
                capsize=3,
                label=f"{runtime} (batch 8)",
            )
            if runtime == "torch":
                for xx, yy, r in zip(x, y, pts, strict=True):
                    ax.annotate(
                        r["size"], (xx, yy), textcoords="offset points", xytext=(4, 4), fontsize=8
                    )
        ax.axvline(TARGET_SPEEDUP, color="grey", ls="--", lw=1)
        ax.axhline(-TARGET_LOSS, color="grey", ls="--", lw=1)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{task} (n={mine[0]['n']})")
        ax.set_xlabel("speed-up over dense, batch 8 (×)")
        ax.set_ylabel("accuracy − stricter dense (points, 95% CI)")
        ax.legend(fontsize=8)
    return _save(fig, path, "Structured modules vs dense: target right of 2.5×, above −1")
