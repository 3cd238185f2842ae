"""Evolution: multi-round fine-tune → merge → evaluate, its strategies, search and report."""

from modularevo.evolution.loop import evolve
from modularevo.evolution.strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["STRATEGIES", "Strategy", "evolve", "get_strategy"]
