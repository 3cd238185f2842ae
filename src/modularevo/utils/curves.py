"""Training curves of one run: live through an Accelerate tracker, drawn as a PNG at the end.

Every training stage (modularize, finetune, MwT, evolve) logs its loss and validation
metric here. :class:`Curves` keeps each value in memory, forwards it to Accelerate's
``TensorBoardTracker`` (offline event files under ``<out>/tensorboard/<run>``; view them
with ``tensorboard --logdir <out>/tensorboard``) and, on :meth:`Curves.close`, writes
``curves.png`` (loss on the left, validation metrics on the right) and ``curves.json``
beside the run's outputs. ``tracker: none`` in a stage's config turns TensorBoard off; the
PNG and JSON are always written. Without the ``tensorboard`` package (the ``curves``
extra) the tracker is skipped with one info line.

Example:
    >>> curves = Curves(out, "finetune", tracker="tensorboard")   # doctest: +SKIP
    >>> curves.log({"train/loss": 0.7}, step=1)                     # doctest: +SKIP
    >>> curves.close(title="finetune lang-id")                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from modularevo.utils.plots import plot_curves

log = logging.getLogger(__name__)

Tracker = Literal["tensorboard", "none"]
"""The ``tracker`` key of every training config."""

TRACKER_DIR = "tensorboard"
CURVES_PNG = "curves.png"
CURVES_JSON = "curves.json"


def tensorboard_available() -> bool:
    """Whether a TensorBoard writer can be imported (the ``curves`` extra)."""
    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


class Curves:
    """One run's curves: ``log`` values per step, ``close`` to draw them.

    Args:
        out_dir: the run's output folder (the PNG, JSON and tracker logs go there).
        run_name: the tracker's run name (a subfolder of ``out_dir/tensorboard``).
        tracker: ``"tensorboard"`` (default) or ``"none"``.
        enabled: ``False`` on non-main processes: nothing is kept or written.
    """

    def __init__(
        self,
        out_dir: str | Path,
        run_name: str,
        *,
        tracker: Tracker | str = "tensorboard",
        enabled: bool = True,
    ) -> None:
        self.out = Path(out_dir)
        self.run_name = run_name
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        self._hidden: set[str] = set()
        self._tracker: Any = None
        if enabled and tracker == "tensorboard":
            self._tracker = _start_tensorboard(self.out / TRACKER_DIR, run_name)

    @property
    def tracking(self) -> bool:
        """Whether values also go to TensorBoard."""
        return self._tracker is not None

    def log(
        self, values: Mapping[str, float | int | None], step: int, *, plot: bool = True
    ) -> None:
        """Record finite numeric ``values`` (``None`` and NaN are skipped) at ``step``.

        ``plot=False`` keeps them out of ``curves.png`` (still in the JSON and TensorBoard),
        for series too many to read in one picture.
        """
        if not self.enabled:
            return
        clean = {
            k: float(v)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        if not clean:
            return
        self.records.append({"step": int(step), **clean})
        if not plot:
            self._hidden.update(clean)
        if self._tracker is not None:
            self._tracker.log(clean, step=int(step))

    def close(self, *, title: str, xlabel: str = "step") -> Path | None:
        """Flush the tracker and write ``curves.png`` and ``curves.json``.

        Returns:
            The PNG's path, or ``None`` when nothing was logged (or not the main process).
        """
        if self._tracker is not None:
            self._tracker.finish()
            self._tracker = None
        if not self.enabled or not self.records:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / CURVES_JSON).write_text(json.dumps(self.records), encoding="utf-8")
        shown = [{k: v for k, v in r.items() if k not in self._hidden} for r in self.records]
        return plot_curves(shown, self.out / CURVES_PNG, title=title, xlabel=xlabel)


def _start_tensorboard(folder: Path, run_name: str) -> Any:
    if not tensorboard_available():
        log.info(
            "TensorBoard curves skipped: the tensorboard package is not installed "
            "(pip install 'modularevo[curves]'); curves.png is written all the same"
        )
        return None
    from accelerate.tracking import TensorBoardTracker  # deferred: accelerate imports torch

    tracker = TensorBoardTracker(run_name, str(folder))
    start = getattr(tracker, "start", None)  # accelerate >= 1.2 starts trackers lazily
    if callable(start) and getattr(tracker, "writer", None) is None:
        start()
    return tracker
