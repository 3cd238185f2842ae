"""modularevo: modular deep learning that keeps one pretrained model evolving.

The public Python API is re-exported here; every CLI command calls one of these.
Heavy submodules (torch, transformers) are imported lazily on first attribute
access, so ``import modularevo`` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modularevo.errors import ConfigError, InputError, ModularEvoError, UnknownNameError
from modularevo.registry import Registry
from modularevo.utils.post_import import run_first, when_imported

if TYPE_CHECKING:
    from modularevo.cost.meter import measure_cost
    from modularevo.deploy.extract import extract_module
    from modularevo.emoe.convert import emoe_convert
    from modularevo.emoe.store import load_emoe
    from modularevo.evaluation.evaluate import evaluate_model
    from modularevo.evolution.loop import evolve
    from modularevo.evolution.quickstart import quickstart
    from modularevo.merging.apply import merge
    from modularevo.merging.lora import extract_lora
    from modularevo.modules.analysis import analyze_modules
    from modularevo.mwt.train import train_mwt
    from modularevo.training.finetune import FinetuneResult, finetune
    from modularevo.training.modularizer import modularize
    from modularevo.training.pretrain import pretrain

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY: dict[str, str] = {
    "analyze_modules": "modularevo.modules.analysis",
    "emoe_convert": "modularevo.emoe.convert",
    "load_emoe": "modularevo.emoe.store",
    "train_mwt": "modularevo.mwt.train",
    "modularize": "modularevo.training.modularizer",
    "FinetuneResult": "modularevo.training.finetune",
    "evaluate_model": "modularevo.evaluation.evaluate",
    "evolve": "modularevo.evolution.loop",
    "extract_lora": "modularevo.merging.lora",
    "extract_module": "modularevo.deploy.extract",
    "finetune": "modularevo.training.finetune",
    "measure_cost": "modularevo.cost.meter",
    "merge": "modularevo.merging.apply",
    "quickstart": "modularevo.evolution.quickstart",
    "pretrain": "modularevo.training.pretrain",
}


def _register_pruned_classes(_auto: Any) -> None:
    """Make extracted-module folders load with ``AutoConfig``/``AutoModel*.from_pretrained``
    without ``trust_remote_code``: the classes of :mod:`modularevo.deploy.hf_pruned` are
    registered right before the first such call (not at import: half-imported then)."""
    from transformers.models.auto import auto_factory, configuration_auto

    def register() -> None:
        importlib.import_module("modularevo.deploy.hf_pruned").register_auto_classes()

    run_first(configuration_auto.AutoConfig, ["from_pretrained"], register)
    run_first(auto_factory._BaseAutoModelClass, ["from_pretrained", "from_config"], register)


# Armed when transformers' Auto classes are imported (by the user or by modularevo);
# `import modularevo` itself stays fast and torch-free.
when_imported("transformers.models.auto.modeling_auto", _register_pruned_classes)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modularevo' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "FinetuneResult",
    "InputError",
    "ModularEvoError",
    "Registry",
    "UnknownNameError",
    "__version__",
    "analyze_modules",
    "emoe_convert",
    "evaluate_model",
    "evolve",
    "extract_lora",
    "extract_module",
    "finetune",
    "load_emoe",
    "measure_cost",
    "merge",
    "modularize",
    "pretrain",
    "quickstart",
    "train_mwt",
]
