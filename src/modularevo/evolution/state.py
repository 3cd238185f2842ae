"""What an evolution run keeps on disk, and how it resumes.

Run folder layout (every step's output is written atomically, so a killed run
resumes from its last completed step)::

    config.resolved.yaml, run_info.json
    modules/<domain>/module.json           module file chosen per domain
    rounds/base/r0/{state.safetensors,record.json}
    finetunes/r<r>/<start>-<task>-<kind>/  one fine-tune (tuned.safetensors = done)
    rounds/<strategy>/r<r>/{state.safetensors,record.json}
    report/{report.md,report.json,*.png}
    final/<strategy>/{model/,heads/}        last round's merged model, HF loadable

A model *state* is a set of classifiers that share a backbone: ``shared`` tensors
plus per-task tensors (each task's own head; a whole model for ``single_task``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from modularevo.utils.atomic import atomic_dir, atomic_write_text

STATE_FILE = "state.safetensors"
RECORD_FILE = "record.json"


@dataclass
class ModelState:
    """Shared tensors plus per-task overrides (heads, or whole models)."""

    shared: dict[str, Tensor] = field(default_factory=dict)
    tasks: dict[str, dict[str, Tensor]] = field(default_factory=dict)

    def for_task(self, task: str) -> dict[str, Tensor]:
        """The full state dict of ``task``'s classifier."""
        return {**self.shared, **self.tasks.get(task, {})}

    def save(self, path: Path) -> None:
        """Write to one safetensors file (keys ``shared/<name>``, ``task/<task>/<name>``)."""
        flat = {f"shared/{k}": v.detach().contiguous().clone() for k, v in self.shared.items()}
        for task, tensors in self.tasks.items():
            for k, v in tensors.items():
                flat[f"task/{task}/{k}"] = v.detach().contiguous().clone()
        save_file(flat, str(path))

    @classmethod
    def load(cls, path: Path) -> ModelState:
        """Read a file written by :meth:`save`."""
        state = cls()
        for key, value in load_file(str(path)).items():
            kind, rest = key.split("/", 1)
            if kind == "shared":
                state.shared[rest] = value
            else:
                task, name = rest.split("/", 1)
                state.tasks.setdefault(task, {})[name] = value
        return state


@dataclass
class RoundRecord:
    """The outcome of one strategy in one round.

    Attributes:
        strategy, round: which one (round 0 is the untouched base).
        scores: task -> {"validation": {accuracy, macro_f1, ...}, "test": {...}}.
        search: the λ/density search (chosen point, evaluations, seconds), if any.
        finetunes: task -> fine-tune summary (steps, seconds, val accuracy).
        seconds: wall time of the merge + evaluation step.
        retention: retention task -> scores of its fixed round-0 probe head on this
            record's shared backbone (empty when the strategy has no shared backbone).
    """

    strategy: str
    round: int
    scores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    search: dict[str, Any] | None = None
    finetunes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    retention: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        """Inverse of :meth:`to_json`."""
        return cls(**data)


class RunDir:
    """Paths of one run folder and atomic writes of its steps."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def round_dir(self, strategy: str, rnd: int) -> Path:
        """Folder of ``strategy``'s round ``rnd``."""
        return self.root / "rounds" / strategy / f"r{rnd}"

    def finetune_dir(self, rnd: int, key: str) -> Path:
        """Folder of one fine-tune job of round ``rnd``."""
        return self.root / "finetunes" / f"r{rnd}" / key

    def module_dir(self, domain: str) -> Path:
        """Folder where the module of ``domain`` is learned."""
        return self.root / "modules" / domain

    def has_round(self, strategy: str, rnd: int) -> bool:
        """Whether that step completed (its record exists)."""
        return (self.round_dir(strategy, rnd) / RECORD_FILE).is_file()

    def write_round(self, record: RoundRecord, state: ModelState | None) -> Path:
        """Write a round's record (and state) atomically; the record marks it done."""
        target = self.round_dir(record.strategy, record.round)
        with atomic_dir(target, overwrite=True) as tmp:
            if state is not None:
                state.save(tmp / STATE_FILE)
            (tmp / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=1), "utf-8")
        return target

    def read_record(self, strategy: str, rnd: int) -> RoundRecord:
        """The record of a completed step."""
        path = self.round_dir(strategy, rnd) / RECORD_FILE
        return RoundRecord.from_json(json.loads(path.read_text("utf-8")))

    def read_state(self, strategy: str, rnd: int) -> ModelState:
        """The model state a completed step wrote."""
        return ModelState.load(self.round_dir(strategy, rnd) / STATE_FILE)

    def records(self) -> list[RoundRecord]:
        """Every completed record, sorted by (round, strategy)."""
        out = [
            RoundRecord.from_json(json.loads(p.read_text("utf-8")))
            for p in sorted((self.root / "rounds").glob(f"*/r*/{RECORD_FILE}"))
        ]
        return sorted(out, key=lambda r: (r.round, r.strategy))

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``data`` as JSON to ``root/name`` atomically."""
        path = self.root / name
        atomic_write_text(path, json.dumps(data, indent=1, default=str))
        return path
