"""``modularevo ls``: the registered merge methods, their parameters and papers."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from modularevo.merging.recipe import load_methods
from modularevo.merging.spec import MERGE_METHODS, Param

console = Console()


def _describe(p: Param) -> str:
    if p.choices:
        rng = "|".join(map(str, p.choices))
    else:
        lo = "" if p.ge is None else f"{p.ge} ≤ "
        hi = "" if p.le is None else f" ≤ {p.le}"
        rng = f"{lo}x{hi}" if (lo or hi) else ""
    default = "required" if p.default is None else f"={p.default}"
    kind = "per model" if p.kind == "per_model" else "global"
    parts = [f"{p.name} {default}", kind, rng, p.doc]
    return " · ".join(x for x in parts if x)


def ls_cmd(
    method: str | None = typer.Argument(None, help="Show only this method."),
) -> None:
    """List merge methods with their parameters, defaults and paper links."""
    load_methods()
    names = [MERGE_METHODS.get(method).name] if method else MERGE_METHODS.names()
    table = Table(title="merge methods", show_lines=True)
    table.add_column("method", style="bold")
    table.add_column("what it does")
    table.add_column("parameters")
    table.add_column("paper", overflow="fold")
    for name in names:
        m = MERGE_METHODS.get(name)
        marks = (("needs base", m.needs_base), ("masks", m.uses_masks), ("random", m.randomized),
                 ("numpy backend", m.capabilities.numpy))  # fmt: skip
        flags = [f for f, on in marks if on]
        summary = m.summary + (f" [dim]({', '.join(flags)})[/]" if flags else "")
        params = "\n".join(_describe(p) for p in m.params) or "—"
        table.add_row(name, summary, params, m.paper)
    console.print(table)
