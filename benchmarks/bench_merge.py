"""Benchmark the streaming merge against a read-and-write floor and mergekit.

Makes (once, cached) a base and three variants of a GPT-2-shaped model with random
weights, at one of two scale points (``--scale``): ``124m`` (GPT-2 small, float32) or
``1.4b`` (GPT-2 shapes with 26 layers of width 2048, ~1.4B parameters, bfloat16, written
tensor by tensor so making it holds one tensor at a time), then times whole processes:

* two floors that read every input tensor once and write the output, with the same
  machinery as the merge (positioned reads into fresh buffers by two reader
  threads, one tensor name read ahead, the background shard writer, the same heap
  settings) and nothing else: ``floor (numpy)`` reads into numpy buffers without
  importing torch, as the merge's numpy backend does; ``floor (torch)`` imports
  torch and reads into torch tensors, as the torch backend does. Each merge is
  compared with the floor of the backend it ran on (``--dry-run`` says which);
* ``modularevo merge`` with ``task_arithmetic`` and ``ties`` (density 0.2);
* ``mergekit-yaml`` on the same recipes, when it is installed (``--mergekit``).

Wall time is measured around each child process; peak RSS is that child's own
``ru_maxrss`` from ``os.wait4``. Every contender (mergekit too) runs ``--repeat`` times and
the fastest run is kept. Run::

    .venv/bin/python benchmarks/bench_merge.py --mergekit /tmp/mk-venv/bin/mergekit-yaml
    .venv/bin/python benchmarks/bench_merge.py --scale 1.4b --cache /tmp/me-bench-1.4b \
        --mergekit /tmp/mk-venv/bin/mergekit-yaml   # ~11 GB of inputs; peak memory matters
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("base", "ft0", "ft1", "ft2")

FLOOR = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from modularevo.io import ShardedWriter, TensorSpec, open_model
from modularevo.utils.heap import reuse_freed_memory
backend, paths, out = sys.argv[1], sys.argv[2:-1], Path(sys.argv[-1])
readers = [open_model(p) for p in paths]
if backend == "torch":
    import torch  # noqa: F401  (what a torch-backed merge pays for before reading)
read = [r.read_numpy if backend == "numpy" else r.read for r in readers]
names = readers[0].names()
specs = [TensorSpec(n, readers[0].tensors[n].code, readers[0].tensors[n].shape) for n in names]
out.mkdir(exist_ok=True)
with ThreadPoolExecutor(2) as pool, ShardedWriter(out, specs, shard_bytes=2 * 10**9) as w, \
        reuse_freed_memory():
    futs = [pool.submit(rd, names[0]) for rd in read]
    for j, name in enumerate(names):
        tensors = [f.result() for f in futs]  # every input byte, once
        if j + 1 < len(names):  # read the next name while this one is written
            futs = [pool.submit(rd, names[j + 1]) for rd in read]
        w.write(name, tensors[0])
        del tensors
"""


def make_models(cache: Path, n_layer: int = 12) -> Path:
    """Base + 3 perturbed variants of a random GPT-2-small model, cached in ``cache``.

    ``n_layer`` < 12 makes a smaller model of the same shapes, for quick profiling.
    """
    if all((cache / m / "model.safetensors").is_file() for m in MODELS):
        return cache
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer))  # 124M parameters at 12
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


SCALES = {"124m": (768, 12, 12, "float32"), "1.4b": (2048, 26, 16, "bfloat16")}
"""Scale point → (width, layers, heads, dtype) of the GPT-2-shaped models."""


def make_large_models(cache: Path, width: int, n_layer: int, n_head: int, dtype: str) -> Path:
    """Base + 3 variants of a GPT-2-shaped model, streamed tensor by tensor into shards.

    Every tensor is drawn from its own seeded generator (variants add 0.01-scaled noise)
    and handed to the shard writer at once, so making a 1.4B-parameter model holds a
    few tensors, never the model.
    """
    if all((cache / m / "config.json").is_file() for m in MODELS):
        return cache
    import torch

    from modularevo.io import ShardedWriter, TensorSpec

    vocab, positions = 50257, 1024
    shapes = {
        "transformer.wte.weight": (vocab, width),
        "transformer.wpe.weight": (positions, width),
    }
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        shapes |= {
            h + "ln_1.weight": (width,), h + "ln_1.bias": (width,),
            h + "attn.c_attn.weight": (width, 3 * width), h + "attn.c_attn.bias": (3 * width,),
            h + "attn.c_proj.weight": (width, width), h + "attn.c_proj.bias": (width,),
            h + "ln_2.weight": (width,), h + "ln_2.bias": (width,),
            h + "mlp.c_fc.weight": (width, 4 * width), h + "mlp.c_fc.bias": (4 * width,),
            h + "mlp.c_proj.weight": (4 * width, width), h + "mlp.c_proj.bias": (width,),
        }  # fmt: skip
    shapes |= {"transformer.ln_f.weight": (width,), "transformer.ln_f.bias": (width,)}
    tdtype = getattr(torch, dtype)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
        "n_positions": positions, "n_embd": width, "n_layer": n_layer, "n_head": n_head,
        "tie_word_embeddings": True, "torch_dtype": dtype,
    }  # fmt: skip
    for m_i, name in enumerate(MODELS):
        folder = cache / name
        folder.mkdir(parents=True, exist_ok=True)
        specs = [TensorSpec(n, dtype, s) for n, s in shapes.items()]
        with ShardedWriter(folder, specs, shard_bytes=2 * 10**9) as w:
            for t_i, (n, s) in enumerate(shapes.items()):
                g = torch.Generator().manual_seed(t_i)
                t = 0.02 * torch.randn(s, generator=g)
                if m_i:
                    g = torch.Generator().manual_seed(1000 * m_i + t_i)
                    t += 0.01 * 0.02 * torch.randn(s, generator=g)
                w.write(n, t.to(tdtype))
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return cache


def recipe(cache: Path, method: str, dtype: str = "float32") -> str:
    """A mergekit-format recipe for ``method`` over the cached models."""
    params = "weight: 0.3, density: 0.2" if method == "ties" else "weight: 0.3"
    models = "\n".join(f"  - model: {cache / m}\n    parameters: {{{params}}}" for m in MODELS[1:])
    return (
        f"merge_method: {method}\nbase_model: {cache / 'base'}\nmodels:\n{models}\ndtype: {dtype}\n"
    )


def timed(
    cmd: list[str], repeat: int, env: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """Fastest wall time (s), its CPU time (user + sys, s) and peak RSS (MiB, the child's
    own ``ru_maxrss``)."""
    best_t, best_cpu, best_rss = float("inf"), 0.0, 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert proc.stderr is not None
        err = proc.stderr.read()  # drained before waiting, so the child never blocks on it
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"command failed: {' '.join(cmd)}\n{err.decode()[-3000:]}")
        if elapsed < best_t:
            best_t, best_rss = elapsed, usage.ru_maxrss / 1024
            best_cpu = usage.ru_utime + usage.ru_stime
    return best_t, best_cpu, best_rss


def main() -> None:
    """Build the models, run every contender, print a markdown table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "me-bench")
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml"), help="mergekit-yaml")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--methods", default="task_arithmetic,ties")
    ap.add_argument("--scale", choices=sorted(SCALES), default="124m", help="model size point")
    ap.add_argument("--n-layer", type=int, default=None, help="fewer layers, for quick checks")
    ap.add_argument(
        "--baseline-src", type=Path, default=None,
        help="a src/ folder of another modularevo version (e.g. from git archive) to time "
        "side by side, before each merge of this one",
    )  # fmt: skip
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    width, n_layer, n_head, dtype = SCALES[args.scale]
    n_layer = args.n_layer or n_layer
    if args.make_only:
        if args.scale == "124m":
            make_models(args.cache, n_layer)
        else:
            make_large_models(args.cache, width, n_layer, n_head, dtype)
        return
    # Models are made in a child: a forked child's ru_maxrss starts at its parent's RSS,
    # so this process must stay small (no torch) for the children's peaks to be theirs.
    make = [sys.executable, __file__, "--make-only", "--cache", str(args.cache)]
    subprocess.run([*make, "--scale", args.scale, "--n-layer", str(n_layer)], check=True)
    cache = args.cache
    work = Path(tempfile.mkdtemp(prefix="me-bench-run-"))
    env_py = str(ROOT / ".venv" / "bin" / "python")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    load_before = os.getloadavg()[0]
    files = [str(cache / m) for m in MODELS]  # folders: single files or sharded
    floors = {}
    for backend in ("numpy", "torch"):
        cmd = [env_py, "-c", FLOOR, backend, *files, str(work / f"floor-{backend}")]
        floors[backend] = timed(cmd, args.repeat)
        rows.append((f"floor ({backend})", "—", backend, *floors[backend]))
    me = str(ROOT / ".venv" / "bin" / "modularevo")
    for method in args.methods.split(","):
        rp = work / f"{method}.yaml"
        rp.write_text(recipe(cache, method, dtype))
        backend = backend_of(me, rp)
        me_cmd = [me, "merge", str(rp), str(work / method), "--overwrite", "--no-progress"]
        if args.baseline_src:
            env = {**os.environ, "PYTHONPATH": str(args.baseline_src)}
            rows.append(("baseline", method, backend, *timed(me_cmd, args.repeat, env)))
        rows.append(("modularevo", method, backend, *timed(me_cmd, args.repeat)))
        if args.mergekit:
            mk = [args.mergekit, str(rp), str(work / f"mk-{method}")]
            rows.append(("mergekit", method, "torch", *timed(mk, args.repeat)))  # best of N
    shutil.rmtree(work, ignore_errors=True)
    print_table(rows, floors, (load_before, os.getloadavg()[0]))


def backend_of(me: str, recipe_path: Path) -> str:
    """The backend ``modularevo merge`` picks for a recipe (from its dry run)."""
    out = subprocess.run([me, "merge", str(recipe_path), "unused", "--dry-run"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("backend:"))


def print_table(
    rows: list[tuple[str, str, str, float, float, float]],
    floors: dict[str, tuple[float, float, float]],
    load: tuple[float, float],
) -> None:
    """Markdown table with ratios to the floor of the same backend and to mergekit.

    ``load`` is the 1-minute load average before and after the runs: on a shared
    machine wall times stretch with it, CPU times (user + sys) much less.
    """
    mk = {m: (t, r) for tool, m, _, t, _, r in rows if tool == "mergekit"}
    print("| tool | method | backend | wall s | CPU s | peak RSS MiB |"
          " × floor time (same backend) | × floor CPU | mergekit time / ours |"
          " our RSS / mergekit |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for tool, method, backend, t, cpu, rss in rows:
        ratio = f"{t / floors[backend][0]:.2f}"
        cpu_ratio = f"{cpu / floors[backend][1]:.2f}"
        vs = mk.get(method) if tool in ("modularevo", "baseline") else None
        speed = f"{vs[0] / t:.2f}" if vs else "—"
        mem = f"{rss / vs[1]:.2f}" if vs else "—"
        cells = [tool, method, backend, f"{t:.2f}", f"{cpu:.2f}", f"{rss:.0f}", ratio,
                 cpu_ratio, speed, mem]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(json.dumps({"cpus": os.cpu_count(), "load_avg_1m_before": round(load[0], 2),
                      "load_avg_1m_after": round(load[1], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
