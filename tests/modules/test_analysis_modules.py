"""Module analysis: density per layer, overlaps, random twins, loss report and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from modularevo.models.arch import describe
from modularevo.modules.analysis import (
    analyze_modules,
    batch_losses,
    density_per_layer,
    domain_loss,
    expected_jaccard,
    random_module,
    random_twin,
)
from modularevo.modules.io import save_module
from modularevo.modules.layers import maskable_params
from modularevo.modules.mask import ModuleMask, fingerprint


def test_density_per_layer_pools_weight_and_bias() -> None:
    m = ModuleMask(masks={
        "a.weight": torch.tensor([[True, False], [False, False]]),
        "a.bias": torch.tensor([True, True]),
        "b.weight": torch.tensor([False, False]),
    })  # fmt: skip
    assert density_per_layer(m) == {"a": pytest.approx(3 / 6), "b": 0.0}


def test_random_twin_keeps_count_per_parameter_but_moves_entries() -> None:
    g = torch.Generator().manual_seed(0)
    masks = {"w": torch.rand(40, 50, generator=g) < 0.3, "b": torch.rand(50, generator=g) < 0.7}
    module = ModuleMask(masks=masks, domain="math")
    twin = random_twin(module, torch.Generator().manual_seed(1))
    for n, m in masks.items():
        assert int(twin.masks[n].sum()) == int(m.sum())
    assert module.overlap(twin)["jaccard"] < 0.5


def _tiny() -> BertForMaskedLM:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)  # fmt: skip
    return BertForMaskedLM(cfg).eval()


def test_domain_loss_with_full_mask_equals_dense_and_model_unchanged() -> None:
    model = _tiny()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids, "labels": ids}]
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    full = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    empty = {n: torch.zeros_like(params[n], dtype=torch.bool) for n in names}
    dense = float(model(input_ids=ids, labels=ids).loss)
    assert domain_loss(model, batches, masks=full) == pytest.approx(dense, rel=1e-6)
    assert domain_loss(model, batches, masks=empty) != pytest.approx(dense)
    assert float(model(input_ids=ids, labels=ids).loss) == pytest.approx(dense)


def _save_modules(model: BertForMaskedLM, tmp_path: Path, density: float = 0.5) -> list[Path]:
    names = maskable_params(model, describe(model).maskable)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    paths = []
    for dom in ("math", "law"):
        masks = {n: torch.rand(params[n].shape, generator=g) < density for n in names}
        covered = [(n, params[n]) for n in names]
        module = ModuleMask(masks=masks, domain=dom, base_fingerprint=fingerprint(covered),
                            metadata={"level": 0.5})  # fmt: skip
        paths.append(save_module(module, tmp_path / dom / "module-0.5.safetensors"))
    return paths


def _corpora() -> dict[str, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    out = {}
    for dom in ("math", "law"):
        out[dom] = []
        for _ in range(4):
            ids = torch.randint(0, 64, (2, 8), generator=g)
            out[dom].append({"input_ids": ids, "labels": ids})
    return out


def test_analyze_modules_report_and_plots(tmp_path: Path) -> None:
    model = _tiny()
    paths = _save_modules(model, tmp_path)
    report = analyze_modules(paths, out_dir=tmp_path / "an", model=model, corpora=_corpora())
    assert set(report["loss_matrix"]) == {"dense", "math@0.5", "law@0.5", "twin:math@0.5",
                                          "twin:law@0.5"}  # fmt: skip
    assert set(report["loss_matrix"]["dense"]) == {"math", "law"}
    assert all(len(v) == 4 for v in report["loss_per_batch"]["math@0.5"].values())
    v = report["verdicts"]["math@0.5"]
    assert v["module_minus_twin"]["n"] == 4
    assert (
        v["module_minus_twin"]["lo"]
        <= v["module_minus_twin"]["diff"]
        <= v["module_minus_twin"]["hi"]
    )
    assert set(v["other_minus_module"]) == {"law@0.5"}
    assert 0.4 < report["modules"]["math@0.5"]["density"] < 0.6
    assert 0.2 < report["overlap"]["math@0.5"]["law@0.5"]["jaccard"] < 0.45
    pair = report["seed_stability"]["pairs"]["different_domain"][0]
    assert pair["random_expectation"] == pytest.approx(pair["jaccard"], abs=0.03)  # both random
    saved = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert saved["loss_matrix"].keys() == report["loss_matrix"].keys()
    for png in ("density.png", "overlap.png", "loss_matrix.png"):
        assert (tmp_path / "an" / png).stat().st_size > 1000


def test_twin_and_module_are_scored_with_the_same_head(tmp_path: Path) -> None:
    """Every row uses the head beside the modules, never a head of its own."""
    from safetensors.torch import save_file

    model = _tiny()
    paths = _save_modules(model, tmp_path)
    g = torch.Generator().manual_seed(9)
    dense_w = model.cls.predictions.transform.dense.weight
    heads = [{"cls.predictions.transform.dense.weight": torch.randn(dense_w.shape, generator=g)}
             for _ in paths]  # fmt: skip
    for p, h in zip(paths, heads, strict=True):  # a different head beside each module
        save_file(h, str(p.parent / "head.safetensors"), metadata={"key": str(p.parent.name)})
    corpora = _corpora()
    report = analyze_modules(paths, out_dir=tmp_path / "an", model=model, corpora=corpora,
                             plots=False)  # fmt: skip
    assert report["head"]["path"] == str(paths[0].parent / "head.safetensors")
    assert report["head"]["mismatched"] == [str(paths[1])]
    from modularevo.modules.io import load_module

    law = load_module(paths[1])
    twin = random_twin(law, torch.Generator().manual_seed(1))  # seed + index of the module
    for masks, row in ((law.masks, "law@0.5"), (twin.masks, "twin:law@0.5"), (None, "dense")):
        want = batch_losses(model, corpora["law"], masks=masks, head=heads[0])
        assert report["loss_per_batch"][row]["law"] == pytest.approx(want, rel=1e-6)
        other = batch_losses(model, corpora["law"], masks=masks, head=heads[1])
        assert report["loss_per_batch"][row]["law"] != pytest.approx(other, rel=1e-6)


def test_random_module_keeps_density_per_parameter_and_base(tmp_path: Path) -> None:
    from modularevo.modules.io import load_module

    model = _tiny()
    path = _save_modules(model, tmp_path, density=0.3)[0]
    learned = load_module(path)
    rnd = random_module(learned, seed=5)
    out = save_module(rnd, tmp_path / "random.safetensors")
    back = load_module(out, params=model.named_parameters())  # same base: accepted
    assert back.metadata["random_control"] is True
    for n, m in learned.masks.items():
        assert int(back.masks[n].sum()) == int(m.sum())
    assert learned.overlap(back)["jaccard"] < 0.25
    again = random_module(learned, seed=5)
    assert all(torch.equal(again.masks[n], rnd.masks[n]) for n in rnd.masks)
    assert expected_jaccard(learned, back) == pytest.approx(
        learned.overlap(back)["jaccard"], abs=0.03
    )


def test_random_module_is_accepted_where_a_learned_module_is(tmp_path: Path) -> None:
    """Fine-tuning, the merge and deployment read modules through the same loaders."""
    from modularevo.merging._checks import open_masks
    from modularevo.modules.io import load_module
    from modularevo.training.strategies import load_plan_masks

    model = _tiny()
    learned = load_module(_save_modules(model, tmp_path, density=0.25)[0])
    path = save_module(random_module(learned, seed=1), tmp_path / "random.safetensors")
    masks = load_plan_masks(path, model)  # the module strategy of `modularevo finetune`
    assert set(masks) == set(learned.masks)
    reader = open_masks([str(path)], list(learned.masks))[0]  # the module-aware merge
    assert set(reader.names()) == set(learned.masks)
    assert load_module(path, params=model.named_parameters(), allow_modified=True).kept == (
        learned.kept
    )
