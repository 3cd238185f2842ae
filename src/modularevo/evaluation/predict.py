"""Predictions of a classifier for every example of a split, sharded over processes.

Each process predicts its share (every ``num_processes``-th example), and the rows are
gathered on all processes in example order, so one process and N processes give the
same predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object


@torch.no_grad()
def eval_predictions(
    accelerator: Accelerator,
    model: torch.nn.Module,
    n: int,
    collate: Callable[[list[int]], dict[str, torch.Tensor]],
    *,
    batch_size: int = 64,
    lengths: Sequence[int] | None = None,
) -> tuple[list[int], list[int], float]:
    """Predict every example ``0..n-1``, sharded over processes and gathered on all of them.

    Args:
        accelerator: the run's accelerator.
        model: a classifier returning ``.logits`` (and ``.loss`` when labels are given).
        n: number of examples.
        collate: indices -> batch with ``labels``.
        batch_size: examples per forward pass on each process.
        lengths: the token length of each example; when given, batches are formed from
            examples of similar length (longest first), so less of every batch is padding.
            The results come back in example order either way.

    Returns:
        (predictions, labels, mean loss), in example order.
    """
    model.eval()
    mine = list(range(accelerator.process_index, n, accelerator.num_processes))
    if lengths is not None:
        mine.sort(key=lambda i: -lengths[i])  # stable: ties keep example order
    rows: list[tuple[int, int, int, float]] = []
    for start in range(0, len(mine), batch_size):
        idx = mine[start : start + batch_size]
        batch = {k: v.to(accelerator.device) for k, v in collate(idx).items()}
        out = model(**batch)
        preds = out.logits.argmax(dim=-1).tolist()
        per_example = torch.nn.functional.cross_entropy(
            out.logits.float(), batch["labels"], reduction="none"
        ).tolist()
        labels = batch["labels"].tolist()
        rows.extend(zip(idx, preds, labels, per_example, strict=True))
    if accelerator.num_processes > 1:
        rows = gather_object(rows)
    rows.sort(key=lambda r: r[0])
    loss = sum(r[3] for r in rows) / max(len(rows), 1)
    return [r[1] for r in rows], [r[2] for r in rows], loss
