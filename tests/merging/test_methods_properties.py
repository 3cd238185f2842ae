"""Properties every registered merge method must have (parametrized over the registry)."""

import math

import pytest
import torch

from modularevo.merging import MERGE_METHODS
from modularevo.merging.methods._params import resolve_params
from modularevo.merging.spec import call_method, method_generators

# Names starting with '_' are test-only methods other test modules register.
NAMES = [n for n in MERGE_METHODS.names() if not n.startswith("_")]

# Parameters that make each method do real work (sparsify, interpolate, prune).
ACTIVE = {
    "linear": {},
    "task_arithmetic": {},
    "ties": {"density": 0.5},
    "dare_linear": {"density": 0.5},
    "dare_ties": {"density": 0.5},
    "breadcrumbs": {"density": 0.5, "gamma": 0.1},
    "breadcrumbs_ties": {"density": 0.5, "gamma": 0.1},
    "della": {"density": 0.5, "epsilon": 0.1},
    "della_linear": {"density": 0.5, "epsilon": 0.1},
    "slerp": {"t": 0.3},
    "model_stock": {},
    "cabs": {"n": 1, "m": 4},
    "modularevo": {},
    "tsv_m": {},
    "iso_c": {},
    "iso_cts": {},
    "magmax": {},
    "cart": {"rank_fraction": 0.4},
    "pcb": {"density": 0.5},
    "opcm": {},
    "nearswap": {"t": 0.5},
    "sce": {"select_topk": 0.5},
    "nuslerp": {"weight": [0.3, 0.7]},
    "multislerp": {},
    "karcher": {},
    "arcee_fusion": {},
    "passthrough": {"scale": [0.5]},
    "ram": {},
    "ramplus_tl": {"r": 0.5, "alpha": 1.0},
}
# (number of copies of one model, params) for which K copies of a model give that model.
IDENTITY = {
    "linear": (3, {}),
    "task_arithmetic": (1, {}),
    "ties": (1, {}),
    "dare_linear": (1, {}),
    "dare_ties": (1, {}),
    "breadcrumbs": (1, {}),
    "breadcrumbs_ties": (1, {}),
    "della": (1, {}),
    "della_linear": (1, {}),
    "slerp": (1, {"t": 1.0}),
    "model_stock": (3, {}),
    "cabs": (2, {"n": 2, "m": 4}),  # the two copies split every block between them
    "modularevo": (1, {}),
    "tsv_m": (1, {}),  # one task keeps its full SVD: the task matrix itself
    "iso_c": (1, {}),  # see NOT_IDENTITY
    "iso_cts": (1, {}),  # see NOT_IDENTITY
    "magmax": (3, {}),
    "cart": (3, {}),  # K copies: the centred vectors are zero, the mean is the model
    "pcb": (1, {}),  # see NOT_IDENTITY
    "opcm": (1, {}),
    "nearswap": (1, {"t": 100.0}),  # every difference is below t: the model's values
    "sce": (1, {}),
    "nuslerp": (2, {}),
    "multislerp": (3, {}),
    "karcher": (3, {}),
    "arcee_fusion": (1, {}),  # see NOT_IDENTITY
    "passthrough": (1, {}),
    "ram": (1, {}),
    "ramplus_tl": (1, {}),
}
# Methods for which one model in does not give that model, and why.
NOT_IDENTITY = {
    "arcee_fusion": "keeps only the changes whose importance is an upper outlier, by design",
    "iso_c": "flattens the spectrum of even one task vector, by design",
    "iso_cts": "flattens the spectrum of even one task vector, by design",
    "pcb": "drops the entries of lowest balanced score and clamps outliers, by design",
}
# Methods that take a fixed number of models besides the base.
FIXED_COUNT = {"slerp": 1, "nearswap": 1, "arcee_fusion": 1, "nuslerp": 2, "passthrough": 1}
# Methods whose result does not depend on the order of the models.
ASYMMETRIC = {"slerp", "cabs", "opcm"}  # opcm: the first model is never projected
# Params that switch a method off (result = base); None: not meaningful.
TO_BASE = {
    "linear": None,  # no base
    "model_stock": None,  # no weights
    "slerp": {"t": 0.0},
    "nearswap": {"t": 0.0},
    "sce": None,  # no weights
    "nuslerp": None,  # weights set t, not a scale
    "multislerp": None,  # weights set the direction, not a scale
    "karcher": None,  # no weights
    "arcee_fusion": None,  # no parameters
    "passthrough": None,  # no base
    "ram": None,  # no weights
    "ramplus_tl": None,  # no weights
    "cart": {"weight": [0.0, 0.0, 0.0]},  # λ scales only the centred part (λ = 0: the mean)
}


def test_every_method_is_classified_in_the_property_tables():
    assert set(NAMES) == set(ACTIVE) == set(IDENTITY), "add new methods to the tables above"
    assert set(NAMES) >= {
        "linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "breadcrumbs",
        "della", "slerp", "model_stock", "cabs", "modularevo",
    }  # fmt: skip


def call(name, tensors, base, *, seed=0, perm=None, **params):
    spec = MERGE_METHODS.get(name)
    k = len(tensors)
    idx = list(range(k)) if perm is None else perm
    gens = method_generators(spec, seed, "w", idx)
    with_base = spec.needs_base or (name == "slerp" and k == 1)  # slerp: base = t=0 end
    b = base if with_base else None
    return call_method(spec, tensors, b, params, generators=gens, masks=[None] * k)


def models(k, shape=(5, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    return base, [base + torch.randn(shape, generator=g) for _ in range(k)]


def n_models(name):
    return FIXED_COUNT.get(name, 3)


@pytest.mark.parametrize("name", NAMES)
def test_registered_metadata(name):
    spec = MERGE_METHODS.get(name)
    assert spec.name == name
    assert spec.paper.startswith("https://")
    assert spec.summary
    assert len(spec.fn.__doc__ or "") > 20
    for p in spec.params:
        assert p.doc, f"{name}.{p.name} has no doc"
        if p.default is not None:
            assert p.check(p.default) is None, f"{name}.{p.name} default fails its own check"


@pytest.mark.parametrize("name", NAMES)
def test_one_model_in_gives_that_model(name):
    if name in NOT_IDENTITY:
        pytest.skip(NOT_IDENTITY[name])
    k, params = IDENTITY[name]
    base, (model,) = models(1)
    out = call(name, [model] * k, base, **params)
    assert torch.allclose(out, model, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_or_lambda_gives_base(name):
    base, ts = models(n_models(name))
    spec = MERGE_METHODS.get(name)
    if name in TO_BASE:
        if TO_BASE[name] is None:
            pytest.skip(f"{name} has no switch-off parameter")
        out = call(name, ts, base, **{**ACTIVE[name], **TO_BASE[name]})
        assert torch.allclose(out, base, atol=1e-6)
        return
    out = call(name, ts, base, **{**ACTIVE[name], "weight": [0.0] * len(ts)})
    assert torch.equal(out, base)
    if any(p.name == "lambda" for p in spec.params):
        out = call(name, ts, base, **{**ACTIVE[name], "lambda": 0.0})
        assert torch.equal(out, base)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_and_inputs_untouched(name):
    base, ts = models(n_models(name))
    before = [t.clone() for t in [base, *ts]]
    a = call(name, ts, base, seed=7, **ACTIVE[name])
    b = call(name, ts, base, seed=7, **ACTIVE[name])
    assert a.dtype == torch.float32
    assert a.shape == base.shape
    assert a.numpy().tobytes() == b.numpy().tobytes()
    for x, y in zip(before, [base, *ts], strict=True):
        assert torch.equal(x, y)
    if MERGE_METHODS.get(name).randomized:
        assert not torch.equal(a, call(name, ts, base, seed=8, **ACTIVE[name]))


@pytest.mark.parametrize("name", NAMES)
def test_low_precision_inputs_compute_in_float32(name):
    base, ts = models(n_models(name))
    ref = call(name, ts, base, **ACTIVE[name])
    half = call(name, [t.bfloat16() for t in ts], base.bfloat16(), **ACTIVE[name])
    assert half.dtype == torch.float32
    assert torch.isfinite(half).all()
    assert half.shape == ref.shape


@pytest.mark.parametrize("name", sorted(set(NAMES) - ASYMMETRIC - set(FIXED_COUNT)))
def test_symmetric_methods_are_order_independent(name):
    base, ts = models(3)
    params = {**ACTIVE[name], "weight": [0.5, 1.0, 2.0]}
    if name in ("model_stock", "sce", "karcher", "ram", "ramplus_tl"):
        params = dict(ACTIVE[name])  # no per-model weights
    fwd = call(name, ts, base, **params)
    perm = [2, 0, 1]
    pparams = {k: ([v[i] for i in perm] if isinstance(v, list) else v) for k, v in params.items()}
    rev = call(name, [ts[i] for i in perm], base, perm=perm, **pparams)
    assert torch.allclose(fwd, rev, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ASYMMETRIC))
def test_asymmetric_methods_do_depend_on_order(name):
    base, ts = models(2)
    params = ACTIVE[name]
    if name == "slerp":
        fwd = call(name, ts, None, **params)  # type: ignore[arg-type]
        rev = call(name, ts[::-1], None, **params)  # type: ignore[arg-type]
    else:
        fwd, rev = call(name, ts, base, **params), call(name, ts[::-1], base, **params)
    assert not torch.allclose(fwd, rev)


@pytest.mark.parametrize("name", NAMES)
def test_resolve_params_rejects_unknown_and_wrong_length(name):
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve_params(name, {"dnesity": 0.5}, 2)
    spec = MERGE_METHODS.get(name)
    if any(p.kind == "per_model" for p in spec.params):
        per = next(p for p in spec.params if p.kind == "per_model")
        with pytest.raises(ValueError, match="values"):
            resolve_params(name, {**ACTIVE[name], per.name: [1.0, 1.0, 1.0]}, 2)


@pytest.mark.parametrize(("method", "param"), [("slerp", "t"), ("cabs", "n"), ("cabs", "m")])
def test_required_params_are_required(method, param):
    spec = MERGE_METHODS.get(method)
    assert spec.param(param).default is None
    with pytest.raises(ValueError, match="required"):
        resolve_params(method, {}, 2)


BAD_GOOD = {
    "density": ([-0.1, 1.01, "0.5", math.nan], [0.0, 1e-6, 0.5, 1.0]),  # 0: mergekit
    "weight": ([math.inf, math.nan, "1", True], [-1.0, 0.0, 2.5]),
    "lambda": ([math.nan], [0.0, -0.5, 2.0]),
    "gamma": ([-0.01, 1.0], [0.0, 0.01, 0.5]),
    "epsilon": ([-0.01, 0.5], [0.0, 0.15]),
    "t": ([math.nan, "x"], [0.0, 0.5, 1.0, -0.1, 1.1]),  # extrapolation, as mergekit
    "common_fraction": ([0.0, 1.0, -0.1], [0.1, 0.8, 0.99]),
    "n": ([0, 1.5, True, "2"], [1, 64]),
    "m": ([0, 4.0], [1, 256]),
    "order": ([[0, 0], [-1], "01", [0.5]], [[], [1, 0], (0, 1, 2)]),
    "normalize": (["yes", 1, None], [True, False]),
    "rescale": (["true", 0], [True, False]),
    "int8_mask": ([1], [True, False]),
    "filter_wise": (["no"], [True, False]),
    "trim_scope": (["layer", 1], ["tensor", "global"]),
    "overlap": (["max"], ["sum", "mean"]),
    "select_topk": ([-0.1, 1.5, math.nan], [0.0, 0.3, 1.0]),
    "nuslerp_row_wise": (["yes", 1], [True, False]),
    "nuslerp_flatten": (["yes", 1], [True, False]),
    "normalize_weights": (["yes", 1], [True, False]),
    "eps": ([0.0, -1e-8], [1e-8, 1e-6]),
    "max_iter": ([0, 2.5], [1, 10]),
    "tol": ([0.0, -1.0], [1e-5]),
    "scale": ([math.nan, "x"], [0.0, 1.0, -2.0]),
    "r": ([-0.1, math.nan], [0.0, 0.1]),
    "alpha": ([-0.1], [0.0, 0.2]),
    "opcm.alpha": ([-0.1, 1.1, math.nan], [0.0, 0.5, 1.0]),
    "rank_fraction": ([0.0, 1.01, -0.1, math.nan], [0.01, 0.5, 1.0]),
    "ram.epsilon": ([-0.01, math.nan], [0.0, 1e-5, 0.5]),  # any |τ| floor
    "ramplus_tl.epsilon": ([-0.01, math.nan], [0.0, 1e-5, 0.5]),
}


@pytest.mark.parametrize("name", NAMES)
def test_param_bounds(name):
    for p in MERGE_METHODS.get(name).params:
        assert p.name in BAD_GOOD, f"add bounds cases for {name}.{p.name}"
        bad, good = BAD_GOOD.get(f"{name}.{p.name}", BAD_GOOD[p.name])
        for v in bad:
            assert p.check(v) is not None, f"{name}.{p.name} accepted {v!r}"
        for v in good:
            assert p.check(v) is None, f"{name}.{p.name} rejected {v!r}: {p.check(v)}"


def test_cross_parameter_validation():
    della = MERGE_METHODS.get("della").validate
    assert della is not None
    assert della({"density": [0.1, 0.5], "epsilon": 0.15}, 2)  # 0.1 - 0.15 <= 0
    assert della({"density": 0.9, "epsilon": [0.1, 0.1]}, 2)  # 0.9 + 0.1 >= 1
    assert not della({"density": [0.5, 1.0], "epsilon": 0.15}, 2)
    ties = MERGE_METHODS.get("ties").validate
    assert ties is not None
    assert not ties({"density": 0.1}, 2)
    cabs = MERGE_METHODS.get("cabs").validate
    assert cabs is not None
    assert cabs({"n": 5, "m": 4}, 2)
    assert cabs({"n": 1, "m": 4, "order": [0, 2]}, 2)
    assert not cabs({"n": 1, "m": 4, "order": [1, 0]}, 2)
    assert not cabs({"n": 1, "m": 4}, 3)
    caps = MERGE_METHODS.get("ties").capabilities
    assert caps.wants_thresholds({"trim_scope": "global"})
    assert not caps.wants_thresholds({"trim_scope": "tensor"})
