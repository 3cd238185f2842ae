"""Masks the data decides: tests a data-ignoring mask fails (issue 12).

A tiny Llama is built as two independent halves: domain A's letters embed in hidden
dims 0-15 and feed attention heads 0-1 and FFN neurons 0-31; domain B's letters use
dims 16-31, heads 2-3, neurons 32-63. Every weight matrix is block-diagonal and RMSNorm
keeps zeros zero, so on A's text the LM gradient reaches A's block only: exactly 25% of
the masked entries. A mask learned on A must live in A's block, beat its random twin on
A, and be the better module on A (and B's on B). A mask learned on constant text (only
the zero-embedding separator, so no LM gradient at all) is the data-ignoring control: it
must not pass the twin test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from modularevo.modules.analysis import analyze_modules, paired_interval
from modularevo.modules.io import load_module
from modularevo.modules.mask import ModuleMask
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularizer import modularize

pytest.importorskip("transformers")

LETTERS_A = "abcdefghijkl"
LETTERS_B = "nopqrstuvwxy"
HALF, NEURONS = 16, 32


def _tokenizer():
    from modularevo.models._tokenizers import tiny_char_tokenizer

    return tiny_char_tokenizer(template="none")


def _block(name: str, shape: torch.Size, half: int) -> Tensor:
    """Bool mask of one half's block in a weight of ``shape`` (rows out, cols in)."""
    rows = HALF if shape[0] == 2 * HALF else NEURONS
    cols = HALF if shape[1] == 2 * HALF else NEURONS
    m = torch.zeros(shape, dtype=torch.bool)
    m[half * rows : (half + 1) * rows, half * cols : (half + 1) * cols] = True
    return m


def _halves(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    out = {}
    for n, p in model.named_parameters():
        if p.dim() == 2 and "layers." in n:
            out[n] = (_block(n, p.shape, 0), _block(n, p.shape, 1))
    return out


def _texts(letters: str, n: int, seed: int) -> list[str]:
    """A first-order chain: each letter is followed by the next one 80% of the time."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        i = int(torch.randint(0, len(letters), (1,), generator=g))
        s = []
        for _ in range(24):
            s.append(letters[i])
            jump = float(torch.rand(1, generator=g)) > 0.8
            i = int(torch.randint(0, len(letters), (1,), generator=g)) if jump else (i + 1) % 12
        rows.append("".join(s))
    return rows


def _corpus(letters: str, seed: int) -> dict[str, list[str]]:
    return {"train": _texts(letters, 160, seed), "validation": _texts(letters, 40, seed + 1)}


@pytest.fixture(scope="module")
def two_halves() -> tuple[nn.Module, object]:
    """The block-diagonal tiny Llama, briefly trained on both domains (block kept)."""
    return build_halves()


def build_halves() -> tuple[nn.Module, object]:
    """Build and briefly train the two-halves model (block structure kept at every step)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from modularevo.data.lm_batches import pack_texts

    cfg = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    tok = _tokenizer()
    ids = {
        h: [tok.convert_tokens_to_ids(c) for c in s] for h, s in enumerate((LETTERS_A, LETTERS_B))
    }
    keep = {n: a | b for n, (a, b) in _halves(model).items()}
    emb = torch.zeros(128, 32, dtype=torch.bool)
    for h, rows in ids.items():
        emb[rows, h * HALF : (h + 1) * HALF] = True
    keep["model.embed_tokens.weight"] = emb
    keep["lm_head.weight"] = emb.clone()
    params = dict(model.named_parameters())

    def project() -> None:
        with torch.no_grad():
            for n, m in keep.items():
                params[n].mul_(m)

    project()
    blocks = torch.cat([pack_texts(_corpus(s, 7)["train"], tok, max_length=24, kind="causal_lm")
                        for s in (LETTERS_A, LETTERS_B)])  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(100):
        b = blocks[torch.randint(0, blocks.shape[0], (16,), generator=g)]
        model(input_ids=b, labels=b).loss.backward()
        opt.step()
        opt.zero_grad()
        project()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def _learn(tmp: Path, model: nn.Module, tok: object, name: str, texts: dict, **kw: object) -> Path:
    base = {"model": "tiny-llama-halves", "kind": "causal_lm", "dataset": name, "steps": 80,
            "batch_size": 8, "max_length": 24, "snapshot_levels": [0.15], "eval_every": 20,
            "eval_batches": 2, "progress": False, "calibration_batches": 4,
            "pressure_quantile": 0.5,
            "output_dir": tmp / name / f"s{kw.get('seed', 0)}"}  # fmt: skip
    base.update(kw)
    cfg = ModularizeConfig.model_validate(base)
    return modularize(cfg, model=model, tokenizer=tok, texts=texts)[0.15]


def _share_in_half(module: ModuleMask, halves: dict, half: int) -> float:
    inside = sum(int((m & halves[n][half]).sum()) for n, m in module.masks.items())
    return inside / max(module.kept, 1)


def _batches(tok: object, letters: str) -> list[dict[str, Tensor]]:
    from modularevo.data.lm_batches import pack_texts

    blocks = pack_texts(_texts(letters, 80, 99), tok, max_length=24, kind="causal_lm")
    return [{"input_ids": blocks[i : i + 8], "labels": blocks[i : i + 8]}
            for i in range(0, 64, 8)]  # fmt: skip


@pytest.fixture(scope="module")
def learned(two_halves, tmp_path_factory) -> dict[str, Path]:
    model, tok = two_halves
    return learn_all(model, tok, tmp_path_factory.mktemp("halves"))


def learn_all(model: nn.Module, tok: object, tmp: Path) -> dict[str, Path]:
    """Masks of A (two seeds), B, and the constant-text control."""
    a, b = _corpus(LETTERS_A, 1), _corpus(LETTERS_B, 2)
    return {
        "a": _learn(tmp, model, tok, "a", a),
        "a_seed1": _learn(tmp, model, tok, "a", a, seed=1),
        "b": _learn(tmp, model, tok, "b", b),
        "const": _learn(tmp, model, tok, "a", {"train": [""] * 200, "validation": [""] * 40},
                        alpha=1.0, lr=0.02, output_dir=tmp / "const"),
    }  # fmt: skip


def test_learned_masks_live_in_their_domains_block(two_halves, learned) -> None:
    model, _ = two_halves
    halves = _halves(model)
    a, b = load_module(learned["a"]), load_module(learned["b"])
    # each half is 25% of the entries: a mask blind to the data keeps ~25% of its entries
    # in A's block; the rest of a learned mask is init noise not yet pushed out
    assert _share_in_half(a, halves, 0) > 0.6
    assert _share_in_half(b, halves, 1) > 0.6
    const = load_module(learned["const"])  # decided by the init alone
    assert 0.18 < _share_in_half(const, halves, 0) < 0.32


def test_domains_never_share_their_score_init(learned) -> None:
    a = load_module(learned["a"]).metadata["run_seed"]
    b = load_module(learned["b"]).metadata["run_seed"]
    a1 = load_module(learned["a_seed1"]).metadata["run_seed"]
    assert len({a, b, a1}) == 3


def test_same_domain_seeds_overlap_more_than_domains(two_halves, learned, tmp_path) -> None:
    model, tok = two_halves
    paths = [learned["a"], learned["a_seed1"], learned["b"]]
    corpora = {"a": _batches(tok, LETTERS_A), "b": _batches(tok, LETTERS_B)}
    r = analyze_modules(paths, out_dir=tmp_path, model=model, corpora=corpora, plots=False)
    s = r["seed_stability"]
    assert s["same_above_different"] is True
    same = s["pairs"]["same_domain"][0]
    assert same["jaccard"] > 2 * same["random_expectation"]
    assert r["best_per_corpus"]["count"] == 2  # a's module best on a, b's on b
    for label in ("a@0.15", "b@0.15"):
        v = r["verdicts"][label]
        assert v["beats_twin"], v
        assert v["best_on_own_corpus"], v
        assert v["domain_specific"], v


def test_a_data_ignoring_mask_fails_the_twin_test(two_halves, learned, tmp_path) -> None:
    model, tok = two_halves
    corpora = {"a": _batches(tok, LETTERS_A)}
    r = analyze_modules([learned["const"]], out_dir=tmp_path, model=model, corpora=corpora,
                        plots=False)  # fmt: skip
    v = next(iter(r["verdicts"].values()))
    assert not v["beats_twin"], v["module_minus_twin"]
    assert not v["domain_specific"]


def test_constant_text_cannot_calibrate_alpha(two_halves, tmp_path) -> None:
    model, tok = two_halves
    from modularevo.errors import InputError

    with pytest.raises(InputError, match="no gradient"):
        _learn(tmp_path, model, tok, "a", {"train": [""] * 200, "validation": [""] * 40})


def test_paired_interval_excludes_zero_only_for_a_real_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(32, generator=g) * 0.1).tolist()
    shifted = paired_interval([x - 0.2 for x in a], a)
    assert shifted["hi"] < 0
    assert shifted["diff"] == pytest.approx(-0.2)
    noise = paired_interval((torch.randn(32, generator=g) * 0.1).tolist(), a)
    assert noise["lo"] < 0 < noise["hi"]
