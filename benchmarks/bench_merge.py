"""Benchmark the streaming merge against a read-and-write floor and mergekit.

Makes (once, cached) a base and three variants of a GPT-2-small-sized model
(~124M parameters, float32, random weights), then times whole processes:

* ``floor``: reads every input tensor once (safetensors) and writes the output;
* ``modularevo merge`` with ``task_arithmetic`` and ``ties`` (density 0.2);
* ``mergekit-yaml`` on the same recipes, when it is installed (``--mergekit``).

Wall time and peak RSS come from ``/usr/bin/time``; each run is repeated and the
fastest kept. Run::

    .venv/bin/python benchmarks/bench_merge.py --mergekit /tmp/mk-venv/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("base", "ft0", "ft1", "ft2")

FLOOR = r"""
import sys, torch
from safetensors import safe_open
from safetensors.torch import save_file
paths, out = sys.argv[1:-1], sys.argv[-1]
files = [safe_open(p, framework="pt") for p in paths]
result = {}
for name in files[0].keys():
    tensors = [f.get_tensor(name) for f in files]  # lazy mmap views
    for t in tensors:
        t.sum()  # touch every byte once: the read
    result[name] = tensors[0].clone()
    del tensors
save_file(result, out, metadata={"format": "pt"})
"""


def make_models(cache: Path) -> Path:
    """Base + 3 perturbed variants of a random GPT-2-small model, cached in ``cache``."""
    if all((cache / m / "model.safetensors").is_file() for m in MODELS):
        return cache
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # 124M parameters
    model.save_pretrained(cache / "base")
    state = {k: v.contiguous() for k, v in model.transformer.state_dict().items()}
    state = {f"transformer.{k}": v for k, v in state.items() if v.is_floating_point()}
    for i, name in enumerate(MODELS[1:]):
        g = torch.Generator().manual_seed(i + 1)
        out = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in state.items()}
        (cache / name).mkdir(parents=True, exist_ok=True)
        save_file(out, str(cache / name / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(cache / "base" / "config.json", cache / name / "config.json")
    return cache


def recipe(cache: Path, method: str) -> str:
    """A mergekit-format recipe for ``method`` over the cached models."""
    params = "weight: 0.3, density: 0.2" if method == "ties" else "weight: 0.3"
    models = "\n".join(f"  - model: {cache / m}\n    parameters: {{{params}}}" for m in MODELS[1:])
    return (
        f"merge_method: {method}\nbase_model: {cache / 'base'}\nmodels:\n{models}\ndtype: float32\n"
    )


def timed(cmd: list[str], repeat: int) -> tuple[float, float]:
    """Fastest wall time (s) and the peak RSS (MiB) over ``repeat`` runs of ``cmd``."""
    best_t, best_rss = float("inf"), 0.0
    for _ in range(repeat):
        res = subprocess.run(
            ["/usr/bin/time", "-f", "TIME %e %M", *cmd], capture_output=True, text=True
        )
        if res.returncode != 0:
            sys.exit(f"command failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
        m = re.findall(r"TIME ([\d.]+) (\d+)", res.stderr)[-1]
        t, rss = float(m[0]), int(m[1]) / 1024
        if t < best_t:
            best_t, best_rss = t, rss
    return best_t, best_rss


def main() -> None:
    """Build the models, run every contender, print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "me-bench")
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml"), help="mergekit-yaml")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--methods", default="task_arithmetic,ties")
    args = ap.parse_args()
    cache = make_models(args.cache)
    work = Path(tempfile.mkdtemp(prefix="me-bench-run-"))
    env_py = str(ROOT / ".venv" / "bin" / "python")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    files = [str(cache / m / "model.safetensors") for m in MODELS]
    floor = timed([env_py, "-c", FLOOR, *files, str(work / "floor.safetensors")], args.repeat)
    rows.append(("floor (read all, write one)", "—", *floor))
    for method in args.methods.split(","):
        rp = work / f"{method}.yaml"
        rp.write_text(recipe(cache, method))
        me_cmd = [str(ROOT / ".venv" / "bin" / "modularevo"), "merge", str(rp), str(work / method)]
        rows.append(("modularevo", method, *timed([*me_cmd, "--overwrite", "--no-progress"],
                                                   args.repeat)))  # fmt: skip
        if args.mergekit:
            mk = [args.mergekit, str(rp), str(work / f"mk-{method}")]
            rows.append(("mergekit", method, *timed(mk, 1)))
    shutil.rmtree(work, ignore_errors=True)
    print_table(rows, floor)


def print_table(rows: list[tuple[str, str, float, float]], floor: tuple[float, float]) -> None:
    """Markdown table with ratios to the floor and to mergekit."""
    mk = {m: (t, r) for tool, m, t, r in rows if tool == "mergekit"}
    print("| tool | method | wall s | peak RSS MiB | × floor time | mergekit time / ours |"
          " our RSS / mergekit |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for tool, method, t, rss in rows:
        ratio = f"{t / floor[0]:.2f}"
        vs = mk.get(method) if tool == "modularevo" else None
        speed = f"{vs[0] / t:.2f}" if vs else "—"
        mem = f"{rss / vs[1]:.2f}" if vs else "—"
        print(f"| {tool} | {method} | {t:.2f} | {rss:.0f} | {ratio} | {speed} | {mem} |")
    print(json.dumps({"cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
