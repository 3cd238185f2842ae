"""Strategy registry: names match the config, parameters fit the merge methods."""

from __future__ import annotations

import json

import pytest
import torch

from modularevo.errors import ConfigError, UnknownNameError
from modularevo.evolution.config import ALL_STRATEGIES
from modularevo.evolution.strategies import STRATEGIES, cabs_n, get_strategy
from modularevo.merging import MERGE_METHODS
from modularevo.merging.methods._params import resolve_params


def test_registry_matches_config_names() -> None:
    assert sorted(STRATEGIES.names()) == sorted(ALL_STRATEGIES)


@pytest.mark.parametrize("name", [n for n in ALL_STRATEGIES if get_strategy(n).merges])
def test_method_params_resolve_for_three_tasks(name: str) -> None:
    s = get_strategy(name)
    assert s.merge_method is not None
    params = s.method_params([0.5, 0.6, 0.7], 0.25, cabs_block=8)
    resolved = resolve_params(s.merge_method, params, 3)
    assert resolved["weight"] == [0.5, 0.6, 0.7]
    spec = MERGE_METHODS.get(s.merge_method)
    for p in spec.params:
        if p.name in params and p.kind == "global":
            assert p.check(params[p.name]) is None


def test_density_mapping() -> None:
    assert get_strategy("ft_cabs").method_params([1, 1], 0.25, cabs_block=8)["n"] == 2
    assert get_strategy("ft_ties").method_params([1], 0.3)["density"] == 0.3
    assert get_strategy("ft_ties").method_params([1], 0.3)["normalize"] is False
    assert "density" not in get_strategy("modularevo").method_params([1], 0.3)
    with pytest.raises(ValueError):
        get_strategy("base").method_params([1], None)
    with pytest.raises(UnknownNameError):
        get_strategy("modular_evo")


def test_cabs_with_k_tasks_refuses_k_times_n_above_m() -> None:
    cabs = get_strategy("ft_cabs")
    with pytest.raises(ValueError, match=r"K=4 tasks and n:m = 4:8 .* K\*n = 16 > 8"):
        cabs.method_params([1, 1, 1, 1], 0.5, cabs_block=8)
    assert cabs.method_params([1, 1, 1, 1], 0.25, cabs_block=8)["n"] == 2
    assert cabs.method_params([1, 1, 1, 1], None, cabs_block=8)["n"] == 2
    # the search only ever sees the usable densities
    assert cabs.usable_densities([0.1, 0.25, 0.5], 4, cabs_block=8) == [0.1, 0.25]
    assert get_strategy("ft_ties").usable_densities([0.5], 4) == [0.5]
    assert cabs_n(0.01, 8) == 1
    assert cabs_n(1.0, 8) == 8
    with pytest.raises(ValueError, match=r"K=3 models and n:m = 2:4"):
        MERGE_METHODS.get("cabs").fn([torch.zeros(4)] * 3, torch.zeros(4), n=2, m=4)


def test_config_refuses_a_cabs_grid_without_a_usable_density() -> None:
    from modularevo.config import validate
    from modularevo.evolution.config import EvolveConfig

    data = {"tasks": ["a", "b", "c", "d"], "search": {"densities": [0.5, 0.75]}}
    with pytest.raises(ConfigError, match=r"K=4 tasks and n:m = 4:8"):
        validate(EvolveConfig, data)
    ok = validate(EvolveConfig, {**data, "search": {"densities": [0.25, 0.5]}})
    assert ok.search.densities == (0.25, 0.5)
    no_cabs = [s for s in ALL_STRATEGIES if s != "ft_cabs"]
    assert validate(EvolveConfig, {**data, "strategies": no_cabs}).strategies == no_cabs


def test_modularevo_random_is_the_module_control() -> None:
    s = get_strategy("modularevo_random")
    assert (s.train, s.merge_method, s.random_mask) == ("module", "modularevo", True)
    assert not get_strategy("modularevo").random_mask


def test_cart_pcb_and_opcm_strategies() -> None:
    assert get_strategy("ft_pcb").method_params([1, 1], 0.2) == {
        "weight": [1.0, 1.0],
        "density": 0.2,
    }
    assert get_strategy("ft_cart").method_params([0.5], 0.2) == {"weight": [0.5]}
    opcm = get_strategy("ft_opcm")
    assert (opcm.train, opcm.merge_method) == ("full", "opcm")
    # the continual merge depends on the order of the tasks: the first is never projected
    base = torch.zeros(3, 3)
    models = [torch.diag(torch.tensor([3.0, 2.0, 1.0])), torch.ones(3, 3)]
    fwd = MERGE_METHODS.get("opcm").fn(models, base, weight=[1.0, 1.0])
    rev = MERGE_METHODS.get("opcm").fn(models[::-1], base, weight=[1.0, 1.0])
    assert not torch.allclose(fwd, rev)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 3 strategies x 2 fine-tunes and λ searches: minutes on a busy CPU
def test_cart_pcb_and_opcm_evolve_on_tiny_tasks(tmp_path) -> None:
    from evolve_helpers import fake_config, tiny_inputs

    from modularevo.evolution.loop import evolve

    data, texts = tiny_inputs()
    names = ["base", "ft_cart", "ft_pcb", "ft_opcm"]
    cfg = fake_config(tmp_path / "evo", strategies=names, rounds=1, domains={})
    root = evolve(cfg, datasets=data, texts=texts)
    rows = json.loads((root / "report" / "report.json").read_text())["table_test"]
    merged = {r["strategy"]: r for r in rows if r["round"] == 1}
    assert set(merged) == set(names)
    for name in ("ft_cart", "ft_pcb", "ft_opcm"):
        assert merged[name]["search_evals"] >= 2
        assert 0 <= merged[name]["ta"] <= 1
