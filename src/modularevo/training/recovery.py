"""Fine-tuning hooks for deployable modules: learned gates and distillation.

:func:`wrap_for_training` puts the classifier inside :class:`~.structured_gates.GatedModel`
(``cfg.gates``) and/or :class:`~.distill.Distiller` (``cfg.distill``) and adds the gates'
optimizer groups; :func:`unwrap_trained` turns the best state back into a plain classifier
(gates folded into the weights) and returns the learned structured module, which
``finetune`` writes to ``module.safetensors`` beside ``model/``::

    modularevo extract RUN/module.safetensors --model RUN/model --out RUN/small
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modularevo.errors import InputError
from modularevo.models.load import load_model
from modularevo.modules.io import load_module
from modularevo.modules.mask import ModuleMask
from modularevo.training.distill import Distiller
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.structured_gates import GatedModel

MODULE_FILE = "module.safetensors"


def load_teacher(path: str) -> nn.Module:
    """A fine-tuned classifier folder (plain transformers or modularevo's) as the teacher."""
    cfg_file = Path(path) / "config.json"
    if cfg_file.is_file():
        archs = json.loads(cfg_file.read_text()).get("architectures") or []
        if any(a.endswith("ForSequenceClassification") for a in archs):
            # deferred: transformers' Auto classes load only for a plain HF teacher
            from transformers import AutoModelForSequenceClassification

            return AutoModelForSequenceClassification.from_pretrained(path).eval()
    model, _ = load_model(path, "classifier")
    return model.eval()


def wrap_for_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: FinetuneConfig,
    *,
    total_steps: int,
    teacher: nn.Module | None = None,
) -> nn.Module:
    """``model`` inside the gates and/or the distiller that ``cfg`` asks for.

    The optimizer (built over ``model``'s parameters) gains the gates' groups.

    Raises:
        InputError: distillation without a teacher.
    """
    inner = model
    if cfg.gates is not None:
        init = None
        if cfg.gates.init_module:
            init = load_module(cfg.gates.init_module, params=model.named_parameters(),
                               allow_modified=True)  # fmt: skip
        model = GatedModel.wrap(model, cfg.gates, total_steps=total_steps, init_module=init)
        for group in model.param_groups():
            optimizer.add_param_group(group)
    if cfg.distill is not None:
        if teacher is None:
            if not cfg.distill.teacher:
                raise InputError(
                    "distill needs a teacher: set distill.teacher to the dense fine-tuned "
                    "model's folder (or pass teacher= to finetune)"
                )
            teacher = load_teacher(cfg.distill.teacher)
        model = Distiller(model, teacher, cfg.distill, student_core=inner)
    return model


def unwrap_trained(model: nn.Module) -> tuple[nn.Module, ModuleMask | None, dict[str, Any]]:
    """(plain classifier, learned module or None, metrics) after training."""
    info: dict[str, Any] = {}
    if isinstance(model, Distiller):
        info["distill"] = model.cfg.model_dump()
        model.close()  # the student and the teacher keep no hooks
        model = model.student
    module = None
    if isinstance(model, GatedModel):
        density = model.density()
        kept = {u: int(k.sum()) for u, k in model.gates.keep().items()}
        model, module = model.finalize()
        info["gates"] = {"expected_density": density, "kept_units": kept}
    return model, module, info
