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


def generate_in_subprocess(
    *, seed: int, n_per_type: int, stream: str = "", types: tuple[str, ...] = ()
) -> list[dict[str, str]]:
    """Generate ``n_per_type`` problems of every type (or of ``types``) in a fresh interpreter.

    ``stream`` names an independent random stream: the corpus uses the default one, a
    task another (``"task"``), so the two draw different problems from the same types.

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
    cmd = [sys.executable, "-m", "modularevo.data._mathdm_worker", str(seed), str(n_per_type),
           stream, ",".join(types)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mathematics_dataset generation failed:\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def write_problems(seed: int, n_per_type: int, stream: str = "", types: str = "") -> None:
    """Write ``n_per_type`` problems of each type as JSON lines to stdout (worker side).

    Args:
        seed: the build seed.
        n_per_type: problems per type.
        stream: "" for the corpus's stream (its seeds predate streams), else a stream name.
        types: comma-separated type names; "" for every type.
    """
    import json
    import random

    import numpy as np
    from sympy.core import random as sympy_random

    generators = problem_generators()
    wanted = [t for t in types.split(",") if t] or sorted(generators)
    unknown = sorted(set(wanted) - set(generators))
    if unknown:
        raise InputError(
            f"unknown mathematics_dataset types {unknown}; known: {sorted(generators)}"
        )
    for name in sorted(wanted):
        fn = generators[name]
        keys = (stream, name) if stream else (name,)
        s = derived_seed(seed, "mathematics_dataset", *keys)
        random.seed(s)
        np.random.seed(s % 2**32)
        sympy_random.seed(s)
        for _ in range(n_per_type):
            ex = fn()
            row = {"type": name, "question": str(ex.question), "answer": str(ex.answer)}
            sys.stdout.write(json.dumps(row) + "\n")
