"""Entry point of the ``modularevo`` CLI: the table of subcommands.

Each subcommand lives in its own small file under ``modularevo/cli/`` and calls
one public function. User errors (:class:`~modularevo.errors.ModularEvoError`)
are printed as one message and exit with status 2, without a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import typer
from rich.console import Console
from rich.text import Text

from modularevo.errors import ModularEvoError
from modularevo.utils.logging import setup_logging
from modularevo.utils.progress import quiet_bars_when_piped

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
    ("extract_lora", "extract_lora_cmd", "extract-lora"),
    ("export_onnx", "export_onnx_cmd", "export-onnx"),
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
        mod = importlib.import_module(f"modularevo.cli.{module}")
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


_OS_FIXES = {
    errno.ENOSPC: "free space on that disk or write the output elsewhere",
    errno.EDQUOT: "free space within your quota or write the output elsewhere",
    errno.EROFS: "the file system is read-only; write the output to a writable folder",
    errno.EACCES: "you lack permission there; fix the permissions or choose another path",
    errno.EPERM: "the operation is not permitted there; choose another path",
    errno.ENOTDIR: "a parent of that path is a file, not a folder; choose another path",
    errno.EEXIST: "it already exists; choose another path or pass --overwrite",
    errno.ENOENT: "it does not exist; check the path",
    errno.EISDIR: "it is a folder where a file was expected; check the path",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: what failed, on which path, and how to fix it."""
    where = " ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    fix = _OS_FIXES.get(exc.errno or -1, "check the path and try again")
    return f"{what}{(' (' + where + ')') if where else ''}; {fix}. Nothing was published."


def _print_error(message: str) -> None:
    """Print ``error: message`` in red; the message is plain text, never rich markup."""
    err_console.print(
        Text("error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True
    )


def main() -> None:
    """Run the CLI; user and OS errors become one red message and exit status 2."""
    quiet_bars_when_piped()  # before any library that draws bars is imported
    app = build_app(only=_requested_command(sys.argv[1:]))
    try:
        app(standalone_mode=False)
    except ModularEvoError as exc:
        _print_error(str(exc))
        sys.exit(2)
    except OSError as exc:
        _print_error(describe_os_error(exc))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        if _is_usage_error(exc):
            _print_error(_usage_message(exc))
            sys.exit(exc.exit_code)  # pyright: ignore[reportAttributeAccessIssue]
        raise


def _usage_message(exc: Exception) -> str:
    """One line for a click usage error: what is wrong and which ``--help`` to read."""
    fmt = getattr(exc, "format_message", None)
    what = str(fmt()) if callable(fmt) else str(exc)
    names: list[str] = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None and getattr(ctx, "parent", None) is not None:  # the root is the program
        names.insert(0, str(ctx.info_name))
        ctx = ctx.parent
    cmd = " ".join(["modularevo", *names])
    return f"{' '.join(what.split()).rstrip('.')}; see `{cmd} --help`"


def _is_usage_error(exc: Exception) -> bool:
    """A click usage error, from click itself or from the copy newer typer versions vendor."""
    kinds: list[type] = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            kinds.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return isinstance(exc, tuple(kinds))


def __getattr__(name: str) -> typer.Typer:
    # `from modularevo.cli.main import app` (tests, docs tools) gets the full app.
    if name == "app":
        return build_app()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
