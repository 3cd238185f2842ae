"""Evolution: multi-round fine-tune → merge → evaluate, its strategies, search and report.

The names are imported on first use: the run config (which lists the strategies) must not
pull in the loop that imports the config, and reading the config loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modularevo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from modularevo.evolution.loop import evolve
    from modularevo.evolution.strategies import STRATEGIES, Strategy, get_strategy

_EXPORTS = {
    "STRATEGIES": "strategies",
    "Strategy": "strategies",
    "get_strategy": "strategies",
    "evolve": "loop",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["STRATEGIES", "Strategy", "evolve", "get_strategy"]
