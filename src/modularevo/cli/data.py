"""``modularevo data ls | show NAME | build [NAMES]``: the offline datasets and their cards."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from modularevo.utils.cache import cache_dir

if TYPE_CHECKING:
    from modularevo.data.card import DataCard

app = typer.Typer(help="Offline datasets: list, inspect, build.", no_args_is_help=True)
console = Console()


def _sizes(card: DataCard | None) -> str:
    if card is None:
        return "[yellow]not built[/]"
    return " / ".join(f"{card.sizes.get(s, 0):,}" for s in ("train", "validation", "test"))


def _labels(names: list[str] | tuple[str, ...] | None) -> str:
    if not names:
        return "—"
    shown = ", ".join(names[:4])
    return f"{len(names)}: {shown}{', …' if len(names) > 4 else ''}"


@app.command("ls")
def ls_cmd() -> None:
    """List every registered dataset: kind, domain, sizes (train/val/test) and labels."""
    # deferred: the dataset registry imports `datasets`; `modularevo --help` stays fast
    from modularevo.data import DATASETS, cached_card

    table = Table(title=f"datasets (cache: {cache_dir('datasets')})")
    for col in ("name", "kind", "domain", "train / val / test", "labels", "source"):
        table.add_column(col, no_wrap=col in {"name", "train / val / test"})
    for name, spec in DATASETS.items():
        card = cached_card(name)
        labels = card.label_names if card and card.label_names else spec.label_names
        if spec.kind == "images" and not labels:
            labels = ["10 classes"]
        table.add_row(name, spec.kind, spec.domain, _sizes(card), _labels(labels),
                      ", ".join(spec.source))  # fmt: skip
    console.print(table)
    console.print("build all: [bold]modularevo data build[/]; details: modularevo data show NAME")


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Registered name, or a local jsonl/csv/parquet/txt file."),
    split: str = typer.Option("train", help="Split to draw samples from."),
    n: int = typer.Option(3, "--n", "-n", min=0, help="Number of samples to show."),
    text_column: str = typer.Option(None, help="Text column of a local file."),
    label_column: str = typer.Option(None, help="Label column of a local file."),
) -> None:
    """Show a dataset's card (building it first if needed) and a few samples."""
    # deferred: the dataset registry imports `datasets`; `modularevo --help` stays fast
    from modularevo.data import DATASETS, build_dataset, load_dataset
    from modularevo.data.build import describe
    from modularevo.data.card import DataCard

    if name in DATASETS:
        dsd, card = build_dataset(name)
    else:
        dsd = load_dataset(name, text_column=text_column, label_column=label_column)
        kind = "task" if "label" in dsd["train"].column_names else "corpus"
        card = DataCard(name=name, kind=kind, domain="user", source=[name])
        describe(card, dsd)
    table = Table(title=f"data card: {card.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in (
        ("kind / domain", f"{card.kind} / {card.domain}"), ("description", card.description),
        ("source", ", ".join(card.source)), ("licence", card.licence),
        ("train / val / test", _sizes(card)),
        ("characters", " / ".join(f"{card.chars.get(str(s), 0):,}" for s in dsd)),
        ("labels", ", ".join(card.label_names) or "—"),
        ("build time", f"{card.build_seconds} s wall, {card.build_cpu_seconds} s CPU"),
        ("options", str(card.options)), ("notes", card.notes),
    ):  # fmt: skip
        table.add_row(field, value)
    console.print(table)
    if split not in dsd:
        raise typer.BadParameter(f"no split {split!r}; choose from {list(dsd)}")
    ds = dsd[split]
    label_feature = ds.features.get("label")
    for i in range(min(n, len(ds))):
        row = ds[i]
        label = f"{label_feature.int2str(row['label'])}  " if label_feature else ""
        body = row.get("text") or f"image {len(row['image'])}x{len(row['image'][0])}"
        console.rule(f"{split}[{i}]")
        console.print(
            Text.assemble((label, "bold"), body[:600] + (" …" if len(body) > 600 else ""))
        )


@app.command("build")
def build_cmd(
    names: list[str] = typer.Argument(None, help="Datasets to build (default: all)."),
    rebuild: bool = typer.Option(False, help="Build again even if cached."),
) -> None:
    """Build datasets into the cache and print each build time."""
    # deferred: the dataset registry imports `datasets`; `modularevo --help` stays fast
    from modularevo.data import DATASETS, build_dataset

    for name in names or DATASETS.names():
        start = time.perf_counter()
        _, card = build_dataset(name, rebuild=rebuild)
        took = time.perf_counter() - start
        console.print(f"{name:15s} {_sizes(card):28s} build {card.build_seconds:6.1f} s wall, "
                      f"{card.build_cpu_seconds:6.1f} s CPU (this call {took:.1f} s)")  # fmt: skip
