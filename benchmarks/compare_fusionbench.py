"""Compare modularevo's TSV-M, Iso-C, Iso-CTS and OPCM with FusionBench's on the same inputs.

FusionBench has heavy dependencies (Lightning, Hydra), so it runs in its own environment:

    python3 -m venv /tmp/fb-venv
    /tmp/fb-venv/bin/pip install torch==2.13.0 && /tmp/fb-venv/bin/pip install fusion-bench==0.2.33
    .venv/bin/python benchmarks/compare_fusionbench.py --fb-python /tmp/fb-venv/bin/python

Seeded random task vectors (matrices of several shapes, a bias) for 2, 3 and 4 tasks are
written to a safetensors file; FusionBench's functions merge them in a subprocess, and
modularevo's registered methods merge the same tensors here. The script prints the
largest absolute and relative difference per method and number of tasks. Both compute in
float32 with ``torch.linalg.svd``; agreement to float32 rounding (relative 1e-4) is
expected, except where singular values are tied (then singular vectors are not unique).

OPCM runs FusionBench's own ``OPCM.run`` (``opcm_general``, ``alpha`` 0.5, models in the
given order) on a small ``nn.Module`` with the same tensors (base 0). FusionBench rescales
with whole-model norms, modularevo's registered ``opcm`` per tensor (it streams tensor by
tensor), so two rows are printed: ``opcm (whole-model norms)`` folds the tensors with
:class:`~modularevo.merging.continual.ContinualOpcm` (one model at a time, whole-model
norms) (the same definition: agreement to float32 rounding), and ``opcm
(per-tensor norms)`` is the registered method as it is (the size of the definitional
difference). FusionBench 0.2.33 has no CART and no PCB, so they are not compared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modularevo.merging import MERGE_METHODS
from modularevo.merging.continual import ContinualOpcm

SHAPES = {"attn.q.weight": (64, 64), "ffn.up.weight": (96, 48), "ffn.down.weight": (48, 96),
          "ffn.up.bias": (96,)}  # fmt: skip

_FB_SIDE = r"""
import sys
import torch
from safetensors.torch import load_file, save_file
from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts
from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
    compute_and_sum_svd_mem_reduction,
)

flat = load_file(sys.argv[1])
k = int(sys.argv[3])
tvs = [{n.split("/", 1)[1]: t for n, t in flat.items() if n.startswith(f"{i}/")} for i in range(k)]
out = {}
for name, merged in (
    ("iso_c", iso_c(tvs, accelerator="cpu")),
    ("iso_cts", iso_cts(tvs, common_space_fraction=0.8, accelerator="cpu")),
    ("tsv_m", compute_and_sum_svd_mem_reduction(tvs, accelerator="cpu")),
):
    for key, t in merged.items():
        out[f"{name}/{key}"] = t.contiguous()

# OPCM: fusion_bench.method.opcm's __init__ imports its CLIP variant, which needs a
# transformers class newer releases dropped; load the general module without it.
import pathlib, types
import fusion_bench.method as fm
pkg = types.ModuleType("fusion_bench.method.opcm")
pkg.__path__ = [str(pathlib.Path(fm.__file__).parent / "opcm")]
sys.modules["fusion_bench.method.opcm"] = pkg
from fusion_bench.method.opcm.opcm_general import OPCM
from fusion_bench.modelpool import BaseModelPool


def model(sd):
    m = torch.nn.Module()
    m.attn, m.ffn = torch.nn.Module(), torch.nn.Module()
    m.attn.q = torch.nn.Linear(64, 64, bias=False)
    m.ffn.up = torch.nn.Linear(48, 96)
    m.ffn.down = torch.nn.Linear(96, 48, bias=False)
    m.load_state_dict(sd)
    return m


zero = {n: torch.zeros_like(t) for n, t in tvs[0].items()}
tasks = {f"t{i}": model(tv) for i, tv in enumerate(tvs)}
pool = BaseModelPool({"_pretrained_": model(zero), **tasks})
merged = OPCM(alpha=0.5, shuffle_order=False, save_on_every_step=False).run(pool)
for key, t in merged.state_dict().items():
    out[f"opcm/{key}"] = t.detach().contiguous()
save_file(out, sys.argv[2])
"""


def task_vectors(k: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``k`` seeded task vectors (a shared direction plus task noise, like fine-tunes)."""
    g = torch.Generator().manual_seed(seed)
    shared = {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}
    return [
        {n: 0.5 * shared[n] + torch.randn(s, generator=g) for n, s in SHAPES.items()}
        for _ in range(k)
    ]


def ours(name: str, tvs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """modularevo's merged task vector (λ = 1, base 0) per tensor."""
    spec = MERGE_METHODS.get(name)
    out = {}
    for key in SHAPES:
        base = torch.zeros(SHAPES[key])
        models = [tv[key] for tv in tvs]
        params = {"common_fraction": 0.8} if name == "iso_cts" else {}
        out[key] = spec.fn(models, base, generators=None, masks=None, thresholds=None, **params)
    return out


def opcm_whole_model(tvs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """OPCM with whole-model norms: :class:`ContinualOpcm`, one model at a time (base 0)."""
    merger = ContinualOpcm({n: torch.zeros(s) for n, s in SHAPES.items()}, alpha=0.5)
    for tv in tvs:
        merger.add(tv)
    return merger.merged()


def _diffs(mine: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], name: str):
    abs_d = max(float((mine[n] - theirs[f"{name}/{n}"]).abs().max()) for n in SHAPES)
    rel_d = max(
        float((mine[n] - theirs[f"{name}/{n}"]).norm() / theirs[f"{name}/{n}"].norm())
        for n in SHAPES
    )
    return abs_d, rel_d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fb-python", required=True, help="python of an env with fusion-bench")
    args = ap.parse_args()
    print("| method | tasks | max abs diff | max rel diff (Frobenius, per tensor) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k in (2, 3, 4):
            tvs = task_vectors(k, seed=k)
            flat = {f"{i}/{n}": t for i, tv in enumerate(tvs) for n, t in tv.items()}
            src, dst = Path(tmp) / f"in{k}.safetensors", Path(tmp) / f"out{k}.safetensors"
            save_file(flat, str(src))
            subprocess.run([args.fb_python, "-c", _FB_SIDE, str(src), str(dst), str(k)],
                           check=True, capture_output=True)  # fmt: skip
            theirs = load_file(str(dst))
            rows = [(name, name, ours(name, tvs)) for name in ("tsv_m", "iso_c", "iso_cts")]
            rows += [("opcm (whole-model norms)", "opcm", opcm_whole_model(tvs)),
                     ("opcm (per-tensor norms)", "opcm", ours("opcm", tvs))]  # fmt: skip
            for label, name, mine in rows:
                abs_d, rel_d = _diffs(mine, theirs, name)
                print(f"| {label} | {k} | {abs_d:.2e} | {rel_d:.2e} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
