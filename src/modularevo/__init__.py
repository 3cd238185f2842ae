"""modularevo: modular deep learning that keeps one pretrained model evolving.

The public Python API is re-exported here; every CLI command calls one of these.
"""

from modularevo.cost.meter import measure_cost
from modularevo.deploy.extract import extract_module
from modularevo.errors import ConfigError, InputError, ModularEvoError, UnknownNameError
from modularevo.evaluation.evaluate import evaluate_model
from modularevo.evolution.loop import evolve
from modularevo.evolution.quickstart import quickstart
from modularevo.merging.apply import merge
from modularevo.registry import Registry
from modularevo.training.finetune import FinetuneResult, finetune

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FinetuneResult",
    "InputError",
    "ModularEvoError",
    "Registry",
    "UnknownNameError",
    "__version__",
    "evaluate_model",
    "evolve",
    "extract_module",
    "finetune",
    "measure_cost",
    "merge",
    "quickstart",
]
