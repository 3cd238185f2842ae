"""Strategy registry: names match the config, parameters fit the merge methods."""

from __future__ import annotations

import pytest

from modularevo.errors import UnknownNameError
from modularevo.evolution.config import ALL_STRATEGIES
from modularevo.evolution.strategies import STRATEGIES, get_strategy
from modularevo.merging import MERGE_METHODS
from modularevo.merging.methods._params import resolve_params


def test_registry_matches_config_names() -> None:
    assert sorted(STRATEGIES.names()) == sorted(ALL_STRATEGIES)


@pytest.mark.parametrize("name", [n for n in ALL_STRATEGIES if get_strategy(n).merges])
def test_method_params_resolve_for_three_tasks(name: str) -> None:
    s = get_strategy(name)
    assert s.merge_method is not None
    params = s.method_params([0.5, 0.6, 0.7], 0.5, cabs_block=8)
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
