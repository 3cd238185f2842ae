"""Evolution: multi-round fine-tune → merge → evaluate, its strategies, search and report."""

from typing import TYPE_CHECKING, Any

from modularevo.evolution.strategies import STRATEGIES, Strategy, get_strategy

if TYPE_CHECKING:
    from modularevo.evolution.loop import evolve


def __getattr__(name: str) -> Any:
    # ``evolve`` is imported on first use: the run config (which lists STRATEGIES) must
    # not pull in the loop that imports the config.
    if name == "evolve":
        # deferred: the loop imports the run config, which imports this package's registry
        from modularevo.evolution.loop import evolve

        return evolve
    raise AttributeError(f"module 'modularevo.evolution' has no attribute {name!r}")


__all__ = ["STRATEGIES", "Strategy", "evolve", "get_strategy"]
