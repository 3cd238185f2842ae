"""Step 3 of ``bench_deploy_sparse.py``: test accuracy of dense and sparse, with intervals.

Per example correctness on the full test split; each accuracy with its Wilson 95% interval,
and the paired bootstrap 95% interval of the difference (sparse − dense) plus McNemar.
Imports of torch, numpy and ``modularevo`` stay inside the functions (see ``sparse_module``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is absent from the DeepSparse venv that runs ``time``
    from torch import Tensor, nn


def correctness(
    model: nn.Module, data: tuple[Tensor, Tensor, Tensor], batch: int = 64
) -> list[int]:
    """Per example 1 if the argmax logit is the label, else 0 (eval mode, dynamic padding)."""
    import torch

    ids, am, y = data
    model.eval()
    out: list[int] = []
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            n = int(am[i : i + batch].sum(1).max())
            logits = model(input_ids=ids[i : i + batch, :n], attention_mask=am[i : i + batch, :n])
            out += (logits.logits.argmax(-1) == y[i : i + batch]).int().tolist()
    return out


def accuracy_stats(dense: Sequence[int], sparse: Sequence[int], *, samples: int = 2000,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Accuracies (%) with Wilson intervals, and sparse − dense with its paired bootstrap
    95% interval and McNemar's exact p (``modularevo.evaluation.stats``)."""
    import numpy as np

    from modularevo.evaluation.stats import (
        bootstrap_averages,
        mcnemar,
        paired_difference,
        wilson_interval,
    )

    cd, cs = np.asarray(dense, bool), np.asarray(sparse, bool)
    n = len(cd)
    boot = bootstrap_averages({"dense": {"t": cd}, "sparse": {"t": cs}}, ["t"],
                              samples=samples, seed=seed)  # fmt: skip
    diff = paired_difference(boot.abs_avg["sparse"], boot.abs_avg["dense"],
                             boot.estimate_abs["sparse"] - boot.estimate_abs["dense"])  # fmt: skip
    out: dict[str, Any] = {"n": n, "diff": diff, "mcnemar": mcnemar(cs, cd)}
    for name, c in (("dense", cd), ("sparse", cs)):
        lo, hi = wilson_interval(int(c.sum()), n)
        out[name] = {"acc": 100 * float(c.mean()), "lo": 100 * lo, "hi": 100 * hi}
    return out
