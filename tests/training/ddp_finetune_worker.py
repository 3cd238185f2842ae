"""Worker of test_ddp_gloo.py: fine-tune the tiny classifier (full, then module strategy).

Run with one process (``python ddp_finetune_worker.py OUT MODULE``) or several
(``python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_finetune_worker.py ...``);
the results land in OUT/full and OUT/module.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from finetune_helpers import tiny_classifier, tiny_dataset, tiny_tokenizer

from modularevo.training.finetune import finetune
from modularevo.training.finetune_config import FinetuneConfig


def main() -> None:
    out, module = Path(sys.argv[1]), sys.argv[2]
    for strategy in ("full", "module"):
        cfg = FinetuneConfig(
            model="tiny", task="tiny", strategy=strategy,
            module=module if strategy == "module" else None, lr=1e-2, max_steps=6,
            batch_size=8, eval_every=3, checkpoint_every=3, patience=None, weight_decay=0.1,
            output_dir=str(out / strategy), progress=False, cpu=True,
        )  # fmt: skip
        finetune(cfg, model=tiny_classifier(dropout=0.0), tokenizer=tiny_tokenizer(),
                 dataset=tiny_dataset(n_train=48))  # fmt: skip


if __name__ == "__main__":
    main()
