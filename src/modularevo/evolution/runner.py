"""Shared resources of a run (datasets, tokenizer, task templates) and the job runner.

:class:`Workspace` loads each task's dataset and one model per task once: a classifier,
or for a generation task the causal LM under the classifiers' names
(:class:`~modularevo.evolution.lm_template.LMTemplate`).
:class:`JobRunner` runs one :class:`~modularevo.evolution.jobs.FinetuneJob` with
:func:`modularevo.training.finetune.finetune`, starting from the job's state file,
and writes the tuned weights (``tuned.safetensors``, the done marker) atomically.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modularevo.data.generation import TaskType, task_type_of
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.evaluate import subset_indices
from modularevo.evolution.jobs import SUMMARY_FILE, TUNED_FILE, FinetuneJob
from modularevo.evolution.lm_template import LMTemplate
from modularevo.evolution.state import ModelState
from modularevo.training.finetune_config import FinetuneConfig, TrainShard
from modularevo.training.finetune_data import label_info
from modularevo.training.strategies import head_prefixes as model_head_prefixes
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.seed import derived_seed

logger = logging.getLogger(__name__)

ModelLoader = Callable[[int], tuple[nn.Module, Any]]

# Examples of the test split that a fine-tune scores at its end (its own metrics only;
# the evolution report scores test itself, after merging).
_FT_TEST_EXAMPLES = 32


class Workspace:
    """Datasets, tokenizer and one in-memory classifier per task.

    Args:
        config: the run's config.
        datasets: task -> DatasetDict to use instead of ``load_dataset(task)`` (tests).
        model_loader: ``num_labels -> (classifier, tokenizer)`` instead of
            ``load_model(config.model, "classifier", ...)`` (tests); a generation task
            calls it with ``num_labels=0`` and wants a causal LM.
    """

    def __init__(
        self,
        config: EvolveConfig,
        *,
        datasets: Mapping[str, Any] | None = None,
        model_loader: ModelLoader | None = None,
    ) -> None:
        self.cfg = config
        self._datasets: dict[str, Any] = dict(datasets or {})
        self._loader = model_loader
        self._templates: dict[str, nn.Module] = {}
        self.tokenizer: Any = None
        self.in_memory_data = datasets is not None

    def dataset(self, task: str) -> Any:
        """The task's DatasetDict (train/validation/test)."""
        if task not in self._datasets:
            # deferred: the datasets library loads only when a registered task is read
            from modularevo.data import load_dataset

            self._datasets[task] = load_dataset(task)
        return self._datasets[task]

    def num_labels(self, task: str) -> int:
        """Size of the task's label set (0 for a generation task)."""
        if self.task_type(task) == "generation":
            return 0
        return label_info(self.dataset(task))[0]

    def task_type(self, task: str) -> TaskType:
        """``classification`` or ``generation`` (a ``target`` column), as fine-tuning reads it."""
        requested = self.cfg.finetune.task_type
        return task_type_of(self.dataset(task)) if requested == "auto" else requested

    def template(self, task: str) -> nn.Module:
        """The task's model (its weights get overwritten by every use)."""
        if task not in self._templates:
            torch.manual_seed(derived_seed(self.cfg.seed, "template", task))
            if self.task_type(task) == "generation":
                if self._loader is not None:
                    lm, tok = self._loader(0)
                else:
                    # deferred: transformers loads only when a model is built
                    from modularevo.models.load import load_model

                    lm, tok = load_model(self.cfg.model, "causal_lm")
                self._templates[task] = LMTemplate(lm).eval()
                self.tokenizer = self.tokenizer or tok
                return self._templates[task]
            if self._loader is not None:
                model, tok = self._loader(self.num_labels(task))
            else:
                # deferred: transformers loads only when a model is built
                from modularevo.models.load import load_model

                model, tok = load_model(
                    self.cfg.model, "classifier", num_labels=self.num_labels(task)
                )
            self._templates[task] = model.eval()
            self.tokenizer = self.tokenizer or tok
        return self._templates[task]

    def head_prefixes(self, task: str) -> tuple[str, ...]:
        """Module names of the task head (kept per task, never merged)."""
        return model_head_prefixes(self.template(task))

    def finetune_dataset(self, task: str) -> Any:
        """Train in full, validation cut to the search slice, a small test slice."""
        import datasets as hfd

        d = self.dataset(task)
        val_idx = subset_indices(
            len(d["validation"]), self.cfg.max_search_examples, 0, f"{task}/validation/search"
        )
        test_idx = subset_indices(len(d["test"]), _FT_TEST_EXAMPLES, 0, f"{task}/test/ft")
        out = hfd.DatasetDict()
        out["train"] = d["train"]
        out["validation"] = d["validation"].select(val_idx)
        out["test"] = d["test"].select(test_idx)
        return out


class JobRunner:
    """Runs fine-tune jobs in this process (callable: ``runner(job)``)."""

    def __init__(self, config: EvolveConfig, workspace: Workspace | None = None) -> None:
        self.cfg = config
        self.ws = workspace or Workspace(config)

    def finetune_config(self, job: FinetuneJob) -> FinetuneConfig:
        """The FinetuneConfig of ``job``: the run's ``finetune`` options plus the job's keys.

        The seed (hence the data order, dropout and head init) depends on (run seed, task,
        round) only, so every strategy's fine-tune of a task sees the same batches.
        """
        o = self.cfg.finetune
        lr = (o.module_lr or o.lr) if job.kind == "module" else o.lr
        if job.lr is not None:  # a variant's own learning rate
            lr = job.lr
        shard = TrainShard(index=job.round - 1, count=self.cfg.rounds, seed=self.cfg.seed)
        return o.for_job(
            {
                "model": self.cfg.model,
                "task": job.task,
                "strategy": job.kind,
                "module": job.module,
                "allow_modified_base": True,
                "lr": lr,
                "seed": derived_seed(self.cfg.seed, "finetune", job.task, job.round) % 2**31,
                "output_dir": job.out_dir,
                "train_shard": shard,
                "cpu": self.cfg.cpu,
                "progress": self.cfg.progress and self.cfg.stage_progress,
                **({"tracker": "none"} if self.cfg.tracker == "none" else {}),
            }
        )

    def __call__(self, job: FinetuneJob) -> None:
        """Run ``job`` unless its ``tuned.safetensors`` already exists."""
        # deferred: accelerate loads only when a job really trains
        from modularevo.training.finetune import finetune

        out = Path(job.out_dir)
        if (out / TUNED_FILE).is_file():
            return
        model = copy.deepcopy(self.ws.template(job.task))
        model.load_state_dict(ModelState.load(Path(job.start_state)).for_task(job.task))
        cfg = self.finetune_config(job)
        if (out / "metrics.json").is_file():  # killed after finetune() finished
            cfg = cfg.model_copy(update={"overwrite": True})
        logger.info("round %d: fine-tune %s (%s)", job.round, job.task, job.key)
        res = finetune(
            cfg,
            model=model,
            tokenizer=self.ws.tokenizer,
            dataset=self.ws.finetune_dataset(job.task),
        )
        trained = res.model if res.model is not None else model  # LoRA returns a new object
        tuned = {k: v.detach().cpu().contiguous().clone() for k, v in trained.state_dict().items()}
        tmp = out / f".{TUNED_FILE}.tmp"
        save_file(tuned, str(tmp))
        m = res.metrics
        summary = {
            "steps": m.get("steps"),
            "best_step": m.get("best_step"),
            "train_seconds": m.get("train_seconds"),
            "val_accuracy": m.get("validation", {}).get("accuracy"),
            "mask": m.get("mask"),
        }
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1, default=str))
        tmp.replace(out / TUNED_FILE)
        if not self.cfg.keep_finetuned:
            shutil.rmtree(res.model_dir, ignore_errors=True)


def runner_from_json(config_json: dict[str, Any]) -> JobRunner:
    """A :class:`JobRunner` for a worker process (the config arrives as JSON)."""
    return JobRunner(EvolveConfig.model_validate(config_json))


def load_tuned(job: FinetuneJob) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tuned state dict of a finished job and its summary."""
    out = Path(job.out_dir)
    summary = json.loads((out / SUMMARY_FILE).read_text("utf-8"))
    return load_file(str(out / TUNED_FILE)), summary
