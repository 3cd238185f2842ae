"""Every stage on tiny random Llama-family decoders: Llama, Qwen2 and Gemma 3.

The tiny models (``modularevo.models._tiny``) have grouped-query attention (4 query heads
over 2 key/value heads), gated FFNs and, for Gemma 3, a head tied to the embeddings and
q/k norms: the structure of Gemma-3-270M at a size a test can afford.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import pytest
import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM

from modularevo.cost.meter import count_flops, count_params
from modularevo.deploy.extract import extract_module, save_extracted
from modularevo.emoe import emoe_convert, emoe_layers, emoe_to_dense, find_ffn_sites
from modularevo.merging import MERGE_METHODS
from modularevo.merging.apply import merge
from modularevo.models import describe, load_model
from modularevo.modules import ModuleMask, fingerprint, save_module
from modularevo.modules.io import load_module
from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularizer import modularize, sampled_causal_loss

FAMILIES = ["tiny-llama", "tiny-qwen2", "tiny-gemma3"]
WORDS = "the cat sat on a mat while two dogs ran far away from home".split()  # noqa: SIM905


def _texts(n: int = 80) -> dict[str, list[str]]:
    g = torch.Generator().manual_seed(0)
    rows = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (10,), generator=g))
            for _ in range(n)]  # fmt: skip
    return {"train": rows[: n - 16], "validation": rows[n - 16 :]}


def _ids(batch: int = 3, seq: int = 11) -> dict[str, Tensor]:
    ids = torch.randint(4, 120, (batch, seq), generator=torch.Generator().manual_seed(5))
    am = torch.ones_like(ids)
    am[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": am}


def _module(model: nn.Module, density: float, seed: int, path: Path | None = None) -> ModuleMask:
    """A random unstructured module over the maskable Linears of ``model``."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    names = [f"{n}.weight" for n in describe(model).maskable if f"{n}.weight" in params]
    masks = {n: torch.rand(params[n].shape, generator=g) < density for n in names}
    chosen = [(n, params[n]) for n in names]
    module = ModuleMask(
        masks=masks, domain="test", arch_fingerprint=fingerprint(chosen, values=False),
        base_fingerprint=fingerprint(chosen),
    )  # fmt: skip
    if path is not None:
        save_module(module, path)
    return module


# ---------------------------------------------------------------- mask learning


@pytest.mark.parametrize("name", FAMILIES)
def test_mask_learning_causal_lm_leaves_tied_head_and_base_alone(name: str, tmp_path: Path):
    model, tok = load_model(name, "causal_lm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ModularizeConfig.model_validate({
        "model": name, "kind": "causal_lm", "steps": 40, "batch_size": 4, "max_length": 24,
        "eval_every": 20, "eval_batches": 1, "progress": False, "calibration_batches": 2,
        "snapshot_levels": [0.5], "output_dir": tmp_path / "run", "sampled_softmax": 16,
    })  # fmt: skip
    paths = modularize(cfg, model=model, tokenizer=tok, texts=_texts())
    module = load_module(paths[0.5])
    assert any(".mlp.gate_proj." in n for n in module.masks)
    assert not any("embed_tokens" in n for n in module.masks)
    if model.config.tie_word_embeddings:
        assert not any("lm_head" in n for n in module.masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", FAMILIES)
def test_sampled_softmax_is_exact_with_the_whole_vocabulary(name: str):
    model, _ = load_model(name, "causal_lm")
    batch = _ids()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    batch = {**batch, "labels": labels}
    with torch.no_grad():
        full = model(**batch).loss
        exact = sampled_causal_loss(model, {}, batch, 10_000, torch.Generator().manual_seed(0))
        few = sampled_causal_loss(model, {}, batch, 8, torch.Generator().manual_seed(0))
    torch.testing.assert_close(exact, full, atol=1e-5, rtol=1e-5)
    assert few.item() != pytest.approx(full.item(), abs=1e-6)  # sampled: an estimate
    assert abs(few.item() - full.item()) < 1.5


def test_sampled_softmax_needs_causal_lm():
    with pytest.raises(ValueError, match="causal_lm only"):
        ModularizeConfig.model_validate(
            {"model": "tiny-bert", "kind": "masked_lm", "dataset": "x", "sampled_softmax": 8}
        )


# ---------------------------------------------------------------- classification


def _labelled() -> datasets.DatasetDict:
    """Texts whose label is the first word's index mod 3."""
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> datasets.Dataset:
        draw = torch.randint(0, len(WORDS), (n, 6), generator=g)
        rows = [[int(i) for i in r] for r in draw]
        labels = datasets.ClassLabel(names=["a", "b", "c"])
        feats = datasets.Features({"text": datasets.Value("string"), "label": labels})
        return datasets.Dataset.from_dict(
            {"text": [" ".join(WORDS[i] for i in r) for r in rows],
             "label": [r[0] % 3 for r in rows]}, features=feats,
        )  # fmt: skip

    return datasets.DatasetDict({"train": split(48), "validation": split(16), "test": split(16)})


@pytest.mark.parametrize("name", FAMILIES)
def test_last_token_pooling_ignores_padding_side(name: str):
    model, tok = load_model(name, "classifier", num_labels=3)
    texts = ["a cat", "two dogs ran far away"]
    out = {}
    for side in ("left", "right"):
        tok.padding_side = side
        batch = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out[side] = model(**batch).logits
    with torch.no_grad():
        alone = model(**tok(texts[:1], return_tensors="pt")).logits
    torch.testing.assert_close(out["left"], out["right"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["left"][:1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_mask_guided_finetune_changes_only_module_weights(name: str, tmp_path: Path):
    model, tok = load_model(name, "classifier", num_labels=3)
    module = _module(model, 0.3, 0, tmp_path / "m.safetensors")
    before = {k: v.clone() for k, v in model.named_parameters()}
    cfg = FinetuneConfig.model_validate({
        "model": name, "task": "toy", "module": str(tmp_path / "m.safetensors"),
        "lr": 1e-2, "max_steps": 6, "batch_size": 8, "max_length": 32, "eval_every": 3,
        "checkpoint_every": None, "output_dir": str(tmp_path / "ft"), "progress": False,
        "cpu": True,
    })  # fmt: skip
    finetune(cfg, model=model, tokenizer=tok, dataset=_labelled())
    after = dict(model.named_parameters())
    for n, m in module.masks.items():
        moved = after[n].detach() != before[n]
        assert not moved[~m].any(), n  # outside the module nothing moves
    assert any((after[n].detach() != before[n])[m].any() for n, m in module.masks.items())


# ---------------------------------------------------------------- merging


def _save_variant(name: str, out: Path, seed: int) -> None:
    model, tok = load_model(name, "causal_lm")
    if seed:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():  # tied tensors are one Parameter: they stay tied
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    tok.save_pretrained(out)


METHODS = [n for n in MERGE_METHODS.names() if not n.startswith("_")]
PARAMS = {
    "ties": {"density": 0.5}, "dare_linear": {"density": 0.5}, "dare_ties": {"density": 0.5},
    "breadcrumbs": {"density": 0.5, "gamma": 0.1},
    "breadcrumbs_ties": {"density": 0.5, "gamma": 0.1},
    "della": {"density": 0.5, "epsilon": 0.1}, "della_linear": {"density": 0.5, "epsilon": 0.1},
    "slerp": {"t": 0.3}, "cabs": {"n": 1, "m": 4}, "nearswap": {"t": 0.5},
    "sce": {"select_topk": 0.5}, "ramplus_tl": {"r": 0.5, "alpha": 1.0},
}  # fmt: skip
ONE_MODEL = {"passthrough", "slerp", "nearswap", "arcee_fusion"}  # base + one model


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name in FAMILIES:
        paths = [root / name / tag for tag in ("base", "a", "b")]
        for seed, p in enumerate(paths):
            _save_variant(name, p, seed)
        model, _ = load_model(str(paths[0]), "causal_lm")
        for i, p in enumerate(paths[1:]):
            _module(model, 0.5, i, p / "module.safetensors")
        out[name] = paths
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_merge_method_gives_a_loadable_model(name, method, variants, tmp_path):
    base, *models = variants[name]
    spec = MERGE_METHODS.get(method)
    models = models[:1] if method in ONE_MODEL else models
    entries = [{"model": str(m)} for m in models]
    if spec.uses_masks:
        for e, m in zip(entries, models, strict=True):
            e["mask"] = str(m / "module.safetensors")
    recipe = {"merge_method": method, "base_model": str(base), "models": entries,
              "parameters": PARAMS.get(method, {})}  # fmt: skip
    if method == "passthrough":
        recipe["parameters"] = {"scale": [0.5]}
    out = merge(recipe, tmp_path / "merged", progress=False)
    merged, _ = load_model(str(out), "causal_lm")
    assert merged.modularevo_fresh_keys == ()
    ref, _ = load_model(str(base), "causal_lm")
    if merged.config.tie_word_embeddings:  # the head is the merged embedding, still tied
        assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    with torch.no_grad():
        logits = merged(**_ids()).logits
    assert torch.isfinite(logits).all()
    changed = [
        n for n, p in merged.named_parameters()
        if not torch.equal(p, dict(ref.named_parameters())[n])
    ]  # fmt: skip
    assert changed, f"{method} returned the base unchanged"


@pytest.mark.parametrize("name", FAMILIES)
def test_task_arithmetic_merge_is_hand_checked_with_tied_embeddings(name, variants, tmp_path):
    base, a, b = variants[name]
    recipe = {"merge_method": "task_arithmetic", "base_model": str(base),
              "models": [{"model": str(a), "parameters": {"weight": 0.5}},
                         {"model": str(b), "parameters": {"weight": 0.25}}]}  # fmt: skip
    merged, _ = load_model(str(merge(recipe, tmp_path / "m", progress=False)), "causal_lm")
    sds = [load_model(str(p), "causal_lm")[0].state_dict() for p in (base, a, b)]
    for n, t in merged.state_dict().items():
        want = sds[0][n] + 0.5 * (sds[1][n] - sds[0][n]) + 0.25 * (sds[2][n] - sds[0][n])
        torch.testing.assert_close(t, want, atol=1e-6, rtol=1e-5, msg=n)


# ---------------------------------------------------------------- EMoE


@pytest.mark.parametrize("name", FAMILIES)
def test_emoe_on_gated_ffn_cuts_experts_across_gate_up_down(name: str):
    model, _ = load_model(name, "causal_lm")
    batch = _ids()
    with torch.no_grad():
        dense = model(**batch).logits
    site = find_ffn_sites(model)[1]
    assert site.up.endswith("gate_proj")
    assert site.mul is not None
    assert site.mul.endswith("up_proj")
    gate0 = model.get_submodule(site.up).weight.detach().clone()
    up0 = model.get_submodule(site.mul).weight.detach().clone()
    down0 = model.get_submodule(site.down).weight.detach().clone()
    emoe_convert(model, experts=4, top_k=4, layers="all")
    layer = emoe_layers(model)[1]
    perm = layer.perm
    assert perm is not None
    # one permutation moves gate rows, up rows and down columns together
    torch.testing.assert_close(model.get_submodule(site.up).weight, gate0[perm])
    torch.testing.assert_close(model.get_submodule(site.mul).weight, up0[perm])
    torch.testing.assert_close(model.get_submodule(site.down).weight, down0[:, perm])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, dense, atol=1e-5, rtol=1e-5)
    # top-1: the layer equals the dense gated FFN with the other experts' neurons zeroed
    model2, _ = load_model(name, "causal_lm")
    emoe_convert(model2, experts=4, top_k=1, layers=[1])
    ffn = emoe_layers(model2)[1]
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gate, up, down = (ffn.part(r) for r in ("up", "mul", "down"))
        h = ffn.part("act")(gate(x)) * up(x)
        keep = torch.zeros(5, 4).scatter_(1, ffn.router_logits(x).argmax(1, keepdim=True), 1.0)
        torch.testing.assert_close(ffn(x), down(h * keep.repeat_interleave(16, dim=1)))
        assert not torch.allclose(model2(**batch).logits, dense, atol=1e-4)
        emoe_to_dense(model2)
        assert emoe_layers(model2) == {}


# ---------------------------------------------------------------- extraction and cost


def _structured(model: nn.Module, keep_groups: list[list[bool]], keep_ffn: list[Tensor]):
    """Whole key/value groups (k/v rows, the group's q rows and o columns) and whole
    gated-FFN neurons (gate and up rows, down columns)."""
    cfg = model.config
    hd, group = cfg.head_dim, cfg.num_attention_heads // cfg.num_key_value_heads
    params = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}

    def put(name: str, rows: Tensor | None = None, cols: Tensor | None = None) -> None:
        if name not in params:
            return
        m = torch.ones_like(params[name], dtype=torch.bool)
        if rows is not None:
            m &= rows.view(-1, *([1] * (m.dim() - 1)))
        if cols is not None:
            m &= cols.view(1, -1)
        masks[name] = m

    for i, (groups, ffn) in enumerate(zip(keep_groups, keep_ffn, strict=True)):
        pre = f"model.layers.{i}"
        kv = torch.tensor(groups).repeat_interleave(hd)
        q = torch.tensor(groups).repeat_interleave(hd * group)
        for s in ("weight", "bias"):
            put(f"{pre}.self_attn.q_proj.{s}", rows=q)
            put(f"{pre}.self_attn.k_proj.{s}", rows=kv)
            put(f"{pre}.self_attn.v_proj.{s}", rows=kv)
        put(f"{pre}.self_attn.o_proj.weight", cols=q)
        put(f"{pre}.mlp.gate_proj.weight", rows=ffn)
        put(f"{pre}.mlp.up_proj.weight", rows=ffn)
        put(f"{pre}.mlp.down_proj.weight", cols=ffn)
    return ModuleMask(masks=masks, domain="test")


@pytest.mark.parametrize("name", FAMILIES)
def test_extracted_module_logits_equal_masked_model_and_cost_less(name: str, tmp_path: Path):
    model, tok = load_model(name, "causal_lm")
    g = torch.Generator().manual_seed(3)
    keep_ffn = [torch.rand(64, generator=g) < 0.4 for _ in range(2)]
    module = _structured(model, [[True, False], [False, False]], keep_ffn)
    small = extract_module(model, module)
    assert small.config.head_counts == [2, 2]  # layer 1 keeps group 0 with zero output
    assert small.config.ffn_sizes == [int(k.sum()) for k in keep_ffn]
    k_proj = small.get_submodule("model.layers.0.self_attn.k_proj")
    assert k_proj.out_features == model.config.head_dim  # one key/value head left
    masked = copy.deepcopy(model)
    module.apply_(dict(masked.named_parameters()))
    with torch.no_grad():
        ref = masked(**_ids()).logits
        torch.testing.assert_close(small(**_ids()).logits, ref, atol=1e-5, rtol=1e-5)
    out = save_extracted(small, tmp_path / "small", tokenizer=tok)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**_ids()).logits, ref, atol=1e-5, rtol=1e-5)
    assert json.loads((out / "config.json").read_text())["head_counts"] == [2, 2]
    assert count_params(small)[0] < count_params(model)[0]
    assert count_flops(small, _ids()) < count_flops(model, _ids())


@pytest.mark.parametrize("name", FAMILIES)
def test_extraction_of_query_heads_dropped_one_by_one(name: str):
    from modularevo.errors import InputError

    model, _ = load_model(name, "causal_lm")
    full = [torch.ones(64, dtype=torch.bool)] * 2
    module = _structured(model, [[True, True], [True, False]], full)
    module.masks["model.layers.0.self_attn.o_proj.weight"][:, :8] = False  # query head 0
    module.masks["model.layers.1.self_attn.o_proj.weight"][:, 8:16] = False  # head 1
    small = extract_module(model, module)
    # layer 0 keeps both groups (head 0 as zeros beside head 1); layer 1 keeps group 0
    # (query heads 0 and 1; head 1 as zeros) and drops group 1
    assert small.config.head_counts == [4, 2]
    masked = copy.deepcopy(model)
    module.apply_(dict(masked.named_parameters()))
    with torch.no_grad():
        torch.testing.assert_close(
            small(**_ids()).logits, masked(**_ids()).logits, atol=1e-5, rtol=1e-5
        )
    k = module.masks["model.layers.0.self_attn.k_proj.weight"]
    k[0, :5] = False  # part of key/value head 0, whose group is kept
    with pytest.raises(InputError, match=r"1 key/value head\(s\) \[0\] are partly kept"):
        extract_module(model, module)
