"""Entry point of the ``modularevo`` CLI: the table of subcommands.

Each subcommand lives in its own small file under ``modularevo/cli/`` and calls
one public function. User errors (:class:`~modularevo.errors.ModularEvoError`)
are printed as one message and exit with status 2, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from modularevo.errors import ModularEvoError
from modularevo.utils.logging import setup_logging

err_console = Console(stderr=True)

# (module under modularevo.cli, attribute, name): a typer command function or sub-app.
_COMMANDS: list[tuple[str, str, str]] = [
    ("merge", "merge_cmd", "merge"),
    ("merge", "validate_cmd", "validate"),
    ("ls", "ls_cmd", "ls"),
    ("data", "app", "data"),
    ("models", "app", "models"),
    ("pretrain", "pretrain_cmd", "pretrain"),
    ("modularize", "modularize_cmd", "modularize"),
    ("finetune", "finetune_cmd", "finetune"),
    ("evaluate", "evaluate_cmd", "evaluate"),
    ("analyze", "analyze_cmd", "analyze"),
    ("analyze", "random_module_cmd", "random-module"),
    ("evolve", "evolve_cmd", "evolve"),
    ("quickstart", "quickstart_cmd", "quickstart"),
    ("cost", "cost_cmd", "cost"),
    ("extract", "extract_cmd", "extract"),
    ("emoe", "app", "emoe"),
    ("mwt", "app", "mwt"),
]


def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug."),
) -> None:
    setup_logging(verbose)


def build_app(only: str | None = None) -> typer.Typer:
    """The typer app with every subcommand, or with ``only`` the one being run (fast start)."""
    app = typer.Typer(
        name="modularevo",
        help="Modular deep learning: modularize, fine-tune inside modules, merge, evolve.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    _install_commands(app, only)
    return app


def _install_commands(app: typer.Typer, only: str | None) -> None:
    """Register the subcommands; with ``only``, just the one being run (fast start-up)."""
    for module, attr, name in _COMMANDS:
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(f"modularevo.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"modularevo.cli.{module}":
                continue  # command not built yet in this checkout
            raise
        obj = getattr(mod, attr)
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=name)
        else:
            app.command(name)(obj)


def _requested_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if it is a known one."""
    names = {name for _, _, name in _COMMANDS}
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in names else None
    return None


def main() -> None:
    """Run the CLI; user errors become one red message and exit status 2."""
    app = build_app(only=_requested_command(sys.argv[1:]))
    try:
        app(standalone_mode=False)
    except ModularEvoError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def __getattr__(name: str) -> typer.Typer:
    # `from modularevo.cli.main import app` (tests, docs tools) gets the full app.
    if name == "app":
        return build_app()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
