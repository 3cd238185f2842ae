"""Import DeepMind's ``mathematics_dataset`` on modern sympy/numpy (internal).

The 1.0.1 release predates sympy 1.7 (``base_solution_linear`` moved) and numpy 2
(``ndarray.itemset`` and ``np.object`` removed); we patch both in memory, without
touching the installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from typing import Any

from modularevo.errors import InputError
from modularevo.utils.seed import derived_seed

_MISSING = (
    "the `math` corpus needs the PyPI package mathematics-dataset, which is not installed; run "
    "`pip install mathematics-dataset` (it is part of `pip install 'modularevo[data]'`)"
)


def problem_generators() -> dict[str, Callable[[], Any]]:
    """``{"module__type": generator}`` for every training problem type.

    Raises:
        InputError: if ``mathematics_dataset`` is not installed.
    """
    if importlib.util.find_spec("mathematics_dataset") is None:
        raise InputError(_MISSING)
    _patch()
    from mathematics_dataset.modules import modules  # type: ignore[import-not-found]

    problems = modules.train(entropy_fn=lambda _range: (3, 10))
    return {f"{m}__{n}": fn for m, fns in problems.items() for n, fn in fns.items()}


def _patch() -> None:
    if getattr(_patch, "done", False):
        return
    dio = importlib.import_module("sympy.solvers.diophantine.diophantine")
    sys.modules["sympy.solvers.diophantine"].base_solution_linear = dio.base_solution_linear  # type: ignore[attr-defined]
    poly = _exec_patched(
        "mathematics_dataset.sample.polynomials",
        lambda src: re.sub(r"(\w+)\.itemset\(([^,]+), ([^)]+)\)", r"\1[\2] = \3", src).replace(
            "np.object", "object"
        ),
    )
    importlib.import_module("mathematics_dataset.sample").polynomials = poly  # type: ignore[attr-defined]
    # expand_entities shuffles a set of objects hashed by memory address, so the order of
    # "Let x = ..." clauses changed between runs; an insertion-ordered dict fixes the order.
    comp = _exec_patched(
        "mathematics_dataset.util.composition",
        lambda src: src.replace(
            "  entities = set(context.child_entities)\n",
            "  entities = dict.fromkeys(context.child_entities)\n",
        ).replace("entities.add(maybe_entity)\n", "entities.setdefault(maybe_entity)\n"),
    )
    for name in list(sys.modules):
        mod = sys.modules[name]
        if name.startswith("mathematics_dataset.") and getattr(mod, "composition", None):
            mod.composition = comp  # type: ignore[attr-defined]
    _patch.done = True  # type: ignore[attr-defined]


def _exec_patched(name: str, edit: Callable[[str], str]) -> Any:
    """Import module ``name`` from its source after applying ``edit`` to the text."""
    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.origin is not None
    with open(spec.origin, encoding="utf-8") as fh:
        src = edit(fh.read())
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(src, spec.origin, "exec"), mod.__dict__)
    return mod


def generate_in_subprocess(*, seed: int, n_per_type: int) -> list[dict[str, str]]:
    """Generate ``n_per_type`` problems of every type in a fresh interpreter.

    ``mathematics_dataset`` iterates over sets of sympy symbols, so its output depends
    on ``PYTHONHASHSEED`` and on every earlier call; a fresh process with a fixed hash
    seed and a fixed call order makes the build reproducible.

    Returns:
        Rows ``{"type": "module__type", "question": ..., "answer": ...}``.
    """
    import json
    import os
    import subprocess

    if importlib.util.find_spec("mathematics_dataset") is None:
        raise InputError(_MISSING)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "modularevo.data._mathdm_worker", str(seed), str(n_per_type)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mathematics_dataset generation failed:\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def write_problems(seed: int, n_per_type: int) -> None:
    """Write ``n_per_type`` problems of each type as JSON lines to stdout (worker side)."""
    import json
    import random

    import numpy as np
    from sympy.core import random as sympy_random

    for name, fn in sorted(problem_generators().items()):
        s = derived_seed(seed, "mathematics_dataset", name)
        random.seed(s)
        np.random.seed(s % 2**32)
        sympy_random.seed(s)
        for _ in range(n_per_type):
            ex = fn()
            row = {"type": name, "question": str(ex.question), "answer": str(ex.answer)}
            sys.stdout.write(json.dumps(row) + "\n")
