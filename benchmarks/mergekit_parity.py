"""Merge the same recipes with mergekit and modularevo and compare the tensors.

Makes four 12-layer llama-shaped models with random weights (a few hundred KB each),
writes one recipe per mergekit form and method (gradients, filter lists, slices,
every shared method), runs ``mergekit-yaml`` (from its own venv) and
``modularevo.merge`` on each, and prints per recipe how many output tensors are
bit-identical and the largest difference. Run::

    python3 -m venv /tmp/mk-venv && /tmp/mk-venv/bin/pip install torch==2.13.0 mergekit==0.1.5
    .venv/bin/python benchmarks/mergekit_parity.py --mergekit /tmp/mk-venv/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from modularevo import merge

LAYERS, VOCAB, HIDDEN = 12, 16, 4


def make_model(folder: Path, seed: int) -> None:
    """A llama-shaped model with every tensor mergekit's llama architecture expects."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g)}
    for i in range(LAYERS):
        pre = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            sd[pre + f"self_attn.{proj}_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g)
        for proj in ("gate", "up"):
            sd[pre + f"mlp.{proj}_proj.weight"] = torch.randn(2 * HIDDEN, HIDDEN, generator=g)
        sd[pre + "mlp.down_proj.weight"] = torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sd[pre + f"{norm}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["lm_head.weight"] = torch.randn(VOCAB, HIDDEN, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 1, "num_key_value_heads": 1, "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))


def recipes(m: Path) -> dict[str, str]:
    """Recipe name → YAML, over the models in ``m`` (base, a, b, c)."""

    def models(*names: str, params: tuple[str, ...] = ()) -> str:
        out = []
        for i, n in enumerate(names):
            out.append(f"  - model: {m / n}")
            if i < len(params) and params[i]:
                out.append(f"    parameters: {params[i]}")
        return "models:\n" + "\n".join(out)

    base = f"base_model: {m / 'base'}"
    t_grad = (
        "  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
        "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5"
    )
    r = {
        "gradients+filters": f"merge_method: task_arithmetic\n{base}\n"
        + models("a", "b", params=("{weight: [0, 0.5, 1]}",
                                   "{weight: [{filter: mlp, value: [1, 0]}, {value: 0}]}")),
        "filter first match": f"merge_method: task_arithmetic\n{base}\n"
        + models("a", "b", params=("{weight: [{value: 0.2}, {filter: mlp, value: 0.9}]}",
                                   "{weight: [{filter: '*', value: 0.4}, {value: 0.8}]}")),
        "ties density 0.05": f"merge_method: ties\n{base}\n"
        + models("a", "b", params=("{weight: 0.7, density: 0.05}",
                                   "{weight: '0.4', density: 0.3}")),
        "slerp (base in models)": f"merge_method: slerp\n{base}\n" + models("base", "a")
        + f"\nparameters:\n{t_grad}",
        "slerp t=1.5": f"merge_method: slerp\n{base}\n" + models("a")
        + "\nparameters: {t: '1.5'}",
        "slices passthrough": "merge_method: passthrough\nslices:\n"
        f"  - sources: [{{model: {m / 'a'}, layer_range: [0, 8]}}]\n"
        f"  - sources: [{{model: {m / 'b'}, layer_range: [4, 12]}}]",
        "slices slerp": f"merge_method: slerp\n{base}\nslices:\n  - sources:\n"
        f"      - {{model: {m / 'base'}, layer_range: [0, {LAYERS}]}}\n"
        f"      - {{model: {m / 'a'}, layer_range: [0, {LAYERS}]}}\nparameters:\n{t_grad}",
        "linear": "merge_method: linear\n"
        + models("a", "b", params=("{weight: 0.3}", "{weight: [0.7, 0.1]}")),
        "breadcrumbs_ties": f"merge_method: breadcrumbs_ties\n{base}\n"
        + models("a", "b", params=("{weight: 0.5, density: 0.5, gamma: 0.1}",) * 2),
        "model_stock": f"merge_method: model_stock\n{base}\n" + models("a", "b", "c"),
        "nuslerp": f"merge_method: nuslerp\n{base}\n"
        + models("a", "b", params=("{weight: 0.3}", "{weight: 0.7}")),
        "multislerp": f"merge_method: multislerp\n{base}\n"
        + models("a", "b", "c", params=("{weight: 0.3}", "{weight: 0.5}", "{weight: 0.2}")),
        "karcher": "merge_method: karcher\n" + models("a", "b", "c"),
        "sce": f"merge_method: sce\n{base}\n" + models("a", "b", "c")
        + "\nparameters: {select_topk: 0.4}",
        "nearswap": f"merge_method: nearswap\n{base}\n" + models("a") + "\nparameters: {t: 0.5}",
        "arcee_fusion": f"merge_method: arcee_fusion\n{base}\n" + models("a"),
        "ram": f"merge_method: ram\n{base}\n" + models("a", "b", "c")
        + "\nparameters: {epsilon: 0.3}",
        "ramplus_tl": f"merge_method: ramplus_tl\n{base}\n" + models("a", "b", "c")
        + "\nparameters: {epsilon: 0.5, r: 0.3, alpha: 0.9}",
    }  # fmt: skip
    return {k: v + "\ndtype: float32\n" for k, v in r.items()}


def _load(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in folder.glob("*.safetensors") for k, v in load_file(str(f)).items()}


def main() -> None:
    """Run both tools on every recipe and print a markdown table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mergekit", required=True, help="path of mergekit-yaml")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mk-parity-"))
    for i, name in enumerate(("base", "a", "b", "c")):
        make_model(work / "m" / name, i)
    print("| recipe | bit-identical tensors | largest abs. difference |\n|---|---:|---:|")
    for i, (name, text) in enumerate(recipes(work / "m").items()):
        path = work / f"r{i}.yaml"
        path.write_text(text)
        mk = subprocess.run([args.mergekit, str(path), str(work / f"mk{i}"), "--allow-crimes"],
                            capture_output=True, text=True)  # fmt: skip
        if mk.returncode:
            print(f"| {name} | mergekit failed: {mk.stderr.strip().splitlines()[-1]} | |")
            continue
        merge(path, work / f"me{i}", progress=False)
        a, b = _load(work / f"mk{i}"), _load(work / f"me{i}")
        if a.keys() != b.keys():
            print(f"| {name} | tensor names differ: {sorted(a.keys() ^ b.keys())[:3]} | |")
            continue
        same = sum(torch.equal(a[k], b[k]) for k in a)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        print(f"| {name} | {same}/{len(a)} | {diff:.3g} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
