"""Tokenizer surgery: merging models whose vocabularies differ (mergekit 0.1.5's rules).

Three tiny llama-shaped models with word-level tokenizers: the base knows
``<unk> <s> a b c d``; ``x`` knows ``<unk> <s> b a e f c d`` (``a``/``b`` swapped, ``e``
and ``f`` new); ``y`` knows ``<unk> <s> a b g e c`` (no ``d``, ``g`` and ``e`` new).
Expected rows are built by hand from each model's own rows and the rules in
:mod:`modularevo.merging.tokenizer`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from merge_helpers import read_output
from safetensors.torch import load_file, save_file

from modularevo import merge
from modularevo.errors import ConfigError, InputError
from modularevo.merging.apply import make_plan

HIDDEN, LAYERS = 4, 2
VOCABS = {
    "base": ["<unk>", "<s>", "a", "b", "c", "d"],
    "x": ["<unk>", "<s>", "b", "a", "e", "f", "c", "d"],
    "y": ["<unk>", "<s>", "a", "b", "g", "e", "c"],
}
EMB, HEAD = "model.embed_tokens.weight", "lm_head.weight"
Q0 = "model.layers.0.self_attn.q_proj.weight"
MERGEKIT = Path("/tmp/mk-venv/bin/mergekit-yaml")


def make_model(folder: Path, tokens: list[str], seed: int, dtype: torch.dtype) -> None:
    """A 2-layer llama-shaped model with a word-level tokenizer of ``tokens``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()  # type: ignore[assignment]
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>")
    fast.save_pretrained(str(folder))
    g = torch.Generator().manual_seed(seed)
    n = len(tokens)
    sd = {EMB: torch.randn(n, HIDDEN, generator=g)}
    for i in range(LAYERS):
        pre = f"model.layers.{i}."
        for p in "qkvo":
            sd[pre + f"self_attn.{p}_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=g)
        for p in ("gate", "up"):
            sd[pre + f"mlp.{p}_proj.weight"] = torch.randn(2 * HIDDEN, HIDDEN, generator=g)
        sd[pre + "mlp.down_proj.weight"] = torch.randn(HIDDEN, 2 * HIDDEN, generator=g)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sd[pre + f"{norm}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd["model.norm.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=g)
    sd[HEAD] = torch.randn(n, HIDDEN, generator=g)
    save_file({k: v.to(dtype) for k, v in sd.items()}, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": n,
        "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 1, "num_key_value_heads": 1, "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))


def _zoo(root: Path, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    for i, (name, tokens) in enumerate(VOCABS.items()):
        make_model(root / name, tokens, i, dtype)
    return {
        "paths": {n: str(root / n) for n in VOCABS},
        "sd": {n: load_file(str(root / n / "model.safetensors")) for n in VOCABS},
    }


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """base, x, y (float32): ``paths`` and their state dicts ``sd``."""
    return _zoo(tmp_path_factory.mktemp("tok-zoo"))


def _row(zoo: dict[str, Any], model: str, tensor: str, token: str) -> torch.Tensor:
    return zoo["sd"][model][tensor][VOCABS[model].index(token)].float()


def _ta(recipe_extra: dict[str, Any], zoo: dict[str, Any]) -> dict[str, Any]:
    p = zoo["paths"]
    return {
        "merge_method": "task_arithmetic", "base_model": p["base"],
        "models": [{"model": p["x"], "parameters": {"weight": 0.5}},
                   {"model": p["y"], "parameters": {"weight": 0.5}}],
        **recipe_extra,
    }  # fmt: skip


def _vocab(out: Path) -> list[str]:
    from transformers import AutoTokenizer

    v = AutoTokenizer.from_pretrained(str(out)).get_vocab()
    return sorted(v, key=v.__getitem__)


def _expect_ta(rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """task_arithmetic with weights 0.5 on aligned rows (base, x, y)."""
    b = rows["base"]
    return b + 0.5 * (rows["x"] - b) + 0.5 * (rows["y"] - b)


def test_union_builds_the_vocabulary_and_fills_missing_rows_as_mergekit(tmp_path: Path, zoo):
    """``tokenizer_source: union``: base tokens, then the others' new tokens in model order.
    A token only one model has takes its row everywhere (f, g); one the base lacks but
    several models have takes their mean (e); one the base has takes the base's (d for y).
    """
    out = tmp_path / "out"
    merge(_ta({"tokenizer_source": "union"}, zoo), out, progress=False)
    assert _vocab(out) == ["<unk>", "<s>", "a", "b", "c", "d", "e", "f", "g"]
    got = read_output(out)
    for tensor in (EMB, HEAD):
        assert got[tensor].shape == (9, HIDDEN)
        r = lambda m, t, tensor=tensor: _row(zoo, m, tensor, t)  # noqa: E731
        for token in ("a", "b", "c", "<s>"):
            rows = {m: r(m, token) for m in VOCABS}
            torch.testing.assert_close(got[tensor][_vocab(out).index(token)], _expect_ta(rows))
        d = {"base": r("base", "d"), "x": r("x", "d"), "y": r("base", "d")}
        torch.testing.assert_close(got[tensor][5], _expect_ta(d))
        e_mean = (r("x", "e") + r("y", "e")) / 2
        e = {"base": e_mean, "x": r("x", "e"), "y": r("y", "e")}
        torch.testing.assert_close(got[tensor][6], _expect_ta(e))
        torch.testing.assert_close(got[tensor][7], r("x", "f"))
        torch.testing.assert_close(got[tensor][8], r("y", "g"))
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 9
    torch.testing.assert_close(
        got[Q0], _expect_ta({m: zoo["sd"][m][Q0] for m in VOCABS}), rtol=0, atol=1e-6
    )


def test_base_source_reorders_each_models_rows_to_the_bases_ids(tmp_path: Path, zoo):
    """``tokenizer_source: base``: the base's 6 tokens; x's swapped a/b are put back in the
    base's order and y, lacking d, gets the base's d row."""
    out = tmp_path / "out"
    merge(_ta({"tokenizer_source": "base"}, zoo), out, progress=False)
    assert _vocab(out) == VOCABS["base"]
    got = read_output(out)[EMB]
    r = lambda m, t: _row(zoo, m, EMB, t)  # noqa: E731
    for j, token in enumerate(VOCABS["base"]):
        y = r("y", token) if token in VOCABS["y"] else r("base", token)
        want = _expect_ta({"base": r("base", token), "x": r("x", token), "y": y})
        torch.testing.assert_close(got[j], want)


def test_model_folder_source_takes_that_models_vocabulary(tmp_path: Path, zoo):
    """``tokenizer_source: <folder>``: y's vocabulary; g (only y) is y's row everywhere, e
    (x and y, not the base) is their mean for the base."""
    out = tmp_path / "out"
    merge(_ta({"tokenizer_source": zoo["paths"]["y"]}, zoo), out, progress=False)
    assert _vocab(out) == VOCABS["y"]
    got = read_output(out)[HEAD]
    r = lambda m, t: _row(zoo, m, HEAD, t)  # noqa: E731
    torch.testing.assert_close(got[4], r("y", "g"))
    e = {"base": (r("x", "e") + r("y", "e")) / 2, "x": r("x", "e"), "y": r("y", "e")}
    torch.testing.assert_close(got[5], _expect_ta(e))


def test_tokens_block_force_sources_and_padding(tmp_path: Path, zoo):
    """``tokenizer:`` with ``tokens`` (forced model_token, token_id, zero, model path) and
    ``pad_to_multiple_of``: 11 tokens padded to 16 rows, each pad row the mean token row."""
    p = zoo["paths"]
    block = {
        "source": "union",
        "pad_to_multiple_of": 8,
        "tokens": {
            "a": {"source": {"kind": "model_token", "model": p["y"], "token": "g"},
                  "force": True},
            "<new>": {"source": {"kind": "zero"}},
            "f": {"source": p["x"]},
            "h": {"source": {"kind": "model_token", "model": p["x"], "token_id": 3}},
        },
    }  # fmt: skip
    out = tmp_path / "out"
    merge(_ta({"tokenizer": block}, zoo), out, progress=False)
    vocab = _vocab(out)
    assert vocab == ["<unk>", "<s>", "a", "b", "c", "d", "e", "f", "g", "<new>", "h"]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 16
    got = read_output(out)[EMB]
    assert got.shape == (16, HIDDEN)
    r = lambda m, t: _row(zoo, m, EMB, t)  # noqa: E731
    torch.testing.assert_close(got[2], r("y", "g"))  # forced in every model
    assert torch.equal(got[9], torch.zeros(HIDDEN))
    torch.testing.assert_close(got[10], r("x", "a"))  # x's row 3 is its "a"
    # each model's pad row is the mean of its 11 aligned rows; TA of those means
    assert torch.equal(got[11:], got[11:12].expand(5, HIDDEN))
    base_rows = torch.stack([got[j] for j in range(11)])  # merged rows
    torch.testing.assert_close(got[11], base_rows.mean(0), rtol=0, atol=1e-6)


def test_the_output_loads_with_transformers(tmp_path: Path, zoo):
    """AutoTokenizer and AutoModelForCausalLM load the merged folder; the ids of the union
    tokenizer index the aligned embedding rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    merge(_ta({"tokenizer_source": "union", "chat_template": "chatml"}, zoo), out, progress=False)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    ids = tok("a g e", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["a", "g", "e"]
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape == (9, HIDDEN)
    torch.testing.assert_close(emb[ids[1]], read_output(out)[EMB][8])
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, 3, 9)
    assert "<|im_start|>" in (tok.chat_template or "")


def test_identical_vocabularies_move_no_row_and_keep_the_numpy_backend(tmp_path: Path):
    """``tokenizer_source: base`` over models sharing the base's tokenizer is the plain
    merge, byte for byte (nothing is aligned, so linear/task_arithmetic stay on numpy)."""
    for i, name in enumerate(("base", "a")):
        make_model(tmp_path / name, VOCABS["base"], i, torch.float32)
    recipe = {
        "merge_method": "task_arithmetic", "base_model": str(tmp_path / "base"),
        "models": [{"model": str(tmp_path / "a"), "parameters": {"weight": 0.3}}],
    }  # fmt: skip
    plan = make_plan({**recipe, "tokenizer_source": "base"})
    try:
        assert plan.backend.name == "numpy"
        assert plan.vocab is not None
        assert plan.vocab.identity
    finally:
        plan.close()
    merge(recipe, tmp_path / "plain", progress=False)
    merge({**recipe, "tokenizer_source": "base"}, tmp_path / "tok", progress=False)
    a, b = read_output(tmp_path / "plain"), read_output(tmp_path / "tok")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("extra", "kind", "match"),
    [
        ({"tokenizer": {"tokens": {"zz": {"force": True}}}}, InputError, "needs a `source:`"),
        ({"tokenizer": {"tokens": {"zz": {"source": "/nowhere"}}}}, InputError,
         "not one of the merged models"),
        ({"tokenizer": {"tokens": {"zz": {"source": {"kind": "model_token", "model": "X",
                                                     "token": "nope"}}}}},
         InputError, "has no token 'nope'"),
        ({"tokenizer": {"source": "union"}, "tokenizer_source": "base"}, ConfigError,
         "not both"),
        ({"tokenizer": {"tokens": {"zz": {"source": {"kind": "model_token", "model": "X"}}}}},
         ConfigError, "exactly one of"),
    ],
)  # fmt: skip
def test_bad_tokens_blocks_are_refused_before_any_weight_is_read(zoo, extra, kind, match):
    p = zoo["paths"]
    text = json.dumps(extra).replace('"X"', json.dumps(p["x"]))
    with pytest.raises(kind, match=match):
        make_plan(_ta(json.loads(text), zoo)).close()


def test_union_needs_loadable_tokenizers_and_models_form(tmp_path: Path, zoo):
    """A base without a loadable tokenizer cannot take part in a union (named); surgery in
    a ``slices:`` merge is refused as not supported yet."""
    shutil.copytree(zoo["paths"]["base"], tmp_path / "bare")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "bare" / f).unlink()
    recipe = _ta({"tokenizer_source": "union"}, zoo) | {"base_model": str(tmp_path / "bare")}
    with pytest.raises(InputError, match="cannot load its tokenizer"):
        make_plan(recipe).close()
    sliced = {
        "merge_method": "passthrough", "tokenizer_source": "union",
        "slices": [{"sources": [{"model": zoo["paths"]["x"], "layer_range": [0, 2]}]}],
    }  # fmt: skip
    with pytest.raises(ConfigError, match="not supported yet"):
        make_plan(sliced)


def _by_token(folder: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    sd = (
        read_output(folder)
        if (folder / "model.safetensors.index.json").is_file()
        else {k: v for f in folder.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    )
    return sd, _vocab(folder)


@pytest.mark.slow
@pytest.mark.skipif(not MERGEKIT.is_file(), reason="mergekit 0.1.5 is not in /tmp/mk-venv")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_agrees_with_mergekit_015(tmp_path: Path, dtype: torch.dtype):
    """Against ``mergekit-yaml`` 0.1.5 on the same recipes: every tensor bit-identical once
    rows are matched by token (mergekit orders a union's new tokens by set iteration, so
    ids may differ). Tolerance: padding rows are the mean of all token rows, whose
    summation order follows that token order: equal within 1e-6 (float32)."""
    zoo = _zoo(tmp_path / "m", dtype)
    p = zoo["paths"]
    recipes = {
        "union": _ta({"tokenizer_source": "union"}, zoo),
        "tokens": _ta({"tokenizer": {"source": "union", "pad_to_multiple_of": 8, "tokens": {
            "a": {"source": {"kind": "model_token", "model": p["y"], "token": "g"},
                  "force": True},
            "<new>": {"source": {"kind": "zero"}}, "f": {"source": p["x"]}}}}, zoo),
        "folder": _ta({"tokenizer_source": p["y"]}, zoo),
        "slerp-base": {"merge_method": "slerp", "base_model": p["base"],
                       "models": [{"model": p["base"]}, {"model": p["x"]}],
                       "parameters": {"t": 0.3}, "tokenizer_source": "base"},
    }  # fmt: skip
    for name, recipe in recipes.items():
        recipe = {**recipe, "dtype": "float32", "out_dtype": str(dtype).removeprefix("torch.")}
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(recipe))
        subprocess.run([str(MERGEKIT), str(path), str(tmp_path / f"mk-{name}"), "--allow-crimes",
                        "--quiet"], check=True, capture_output=True)  # fmt: skip
        merge(path, tmp_path / f"me-{name}", progress=False)
        ours, ours_vocab = _by_token(tmp_path / f"me-{name}")
        theirs, their_vocab = _by_token(tmp_path / f"mk-{name}")
        assert sorted(ours_vocab) == sorted(their_vocab), name
        n = len(ours_vocab)
        order = torch.tensor([their_vocab.index(t) for t in ours_vocab])
        for k, a in ours.items():
            b = theirs[k]
            if k in (EMB, HEAD):
                torch.testing.assert_close(a[n:], b[n:], rtol=0, atol=1e-6)
                a, b = a[:n], b[order]
            assert torch.equal(a, b), (name, k)
