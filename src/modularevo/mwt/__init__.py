"""MwT: Modularizing while Training for CNNs (Qi et al., ICSE'24, https://arxiv.org/abs/2306.09376).

Train a CNN whose convs carry per-sample channel gates with a loss that rewards cohesion (a class
always uses the same kernels) and penalises coupling (classes share few kernels); then cut out a
per-class module and compose modules into a smaller CNN for a subset of classes.

Example:
    >>> from modularevo.mwt import load_mwt_config, train_mwt, extract_module, evaluate_module
    >>> run = train_mwt(load_mwt_config(None, ["model=test_vgg", "epochs=3"]), "runs/mwt")
    >>> extract_module(run, [0, 1, 2], "runs/mwt-012")["krr"]
    >>> evaluate_module("runs/mwt-012")["test_acc"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modularevo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from modularevo.mwt.config import MwTConfig, load_mwt_config
    from modularevo.mwt.layers import GatedConv, MaskGenerator, slice_gated
    from modularevo.mwt.losses import (
        MwTLoss,
        PairSimilarity,
        class_kernel_frequency,
        cohesion_coupling_losses,
        keep_kernels,
        mwt_loss,
        pair_similarity,
    )
    from modularevo.mwt.models import (
        CNN_MODELS,
        MaskedCNN,
        MaskedResNet,
        MaskedVGG,
        build_model,
        gated_layers,
    )
    from modularevo.mwt.reuse import (
        class_masks,
        collect_gates,
        compose_module,
        evaluate_module,
        extract_module,
        kernel_retention_rate,
        load_module,
        module_keep,
    )
    from modularevo.mwt.train import evaluate_accuracy, load_images, load_run, train_mwt, train_step

_EXPORTS = {
    "MwTConfig": "config",
    "load_mwt_config": "config",
    "GatedConv": "layers",
    "MaskGenerator": "layers",
    "slice_gated": "layers",
    "MwTLoss": "losses",
    "PairSimilarity": "losses",
    "class_kernel_frequency": "losses",
    "cohesion_coupling_losses": "losses",
    "keep_kernels": "losses",
    "mwt_loss": "losses",
    "pair_similarity": "losses",
    "CNN_MODELS": "models",
    "MaskedCNN": "models",
    "MaskedResNet": "models",
    "MaskedVGG": "models",
    "build_model": "models",
    "gated_layers": "models",
    "class_masks": "reuse",
    "collect_gates": "reuse",
    "compose_module": "reuse",
    "evaluate_module": "reuse",
    "extract_module": "reuse",
    "kernel_retention_rate": "reuse",
    "load_module": "reuse",
    "module_keep": "reuse",
    "evaluate_accuracy": "train",
    "load_images": "train",
    "load_run": "train",
    "train_mwt": "train",
    "train_step": "train",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CNN_MODELS",
    "GatedConv",
    "MaskGenerator",
    "MaskedCNN",
    "MaskedResNet",
    "MaskedVGG",
    "MwTConfig",
    "MwTLoss",
    "PairSimilarity",
    "build_model",
    "class_kernel_frequency",
    "class_masks",
    "cohesion_coupling_losses",
    "collect_gates",
    "compose_module",
    "evaluate_accuracy",
    "evaluate_module",
    "extract_module",
    "gated_layers",
    "keep_kernels",
    "kernel_retention_rate",
    "load_images",
    "load_module",
    "load_mwt_config",
    "load_run",
    "module_keep",
    "mwt_loss",
    "pair_similarity",
    "slice_gated",
    "train_mwt",
    "train_step",
]
