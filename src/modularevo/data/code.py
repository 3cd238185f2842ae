"""Code: the ``code`` corpus and the ``code-package`` task (Python functions on disk).

Source: the Python standard library and a fixed list of installed dependencies
(numpy, torch, transformers, ...), parsed with ``ast``. Test code is excluded: any
file under a ``test``/``tests``/``idle_test`` folder or named ``test_*.py``/``*_test.py``,
and any function whose name starts with ``test``.

* ``code`` (corpus): function sources from the stdlib (every top-level module and
  package) and the dependency packages, at most ``per_package`` functions each.
* ``code-package`` (task): function source -> its top-level package, over
  ``CODE_PACKAGES`` (11 stdlib packages + 9 dependencies of this project).
* ``code-name`` (generation): a public function's parameter list and docstring summary
  -> its name, over the same packages (category = the package), scored by exact match.

The group key is the full function source, shared by the three datasets with the same
salt, so a function in a task's test split is never in the corpus's train split. (Grouping
by file would be stricter, but small packages such as ``logging`` have 3-5 files, which
would leave whole classes out of validation or test.)
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

from modularevo.data.spec import DatasetSpec, register_dataset
from modularevo.data.splits import unit_hash
from modularevo.errors import InputError

STDLIB_PACKAGES: tuple[str, ...] = (
    "asyncio", "email", "xml", "multiprocessing", "tkinter", "idlelib",
    "unittest", "importlib", "logging", "http", "urllib",
)  # fmt: skip
DEPENDENCY_PACKAGES: tuple[str, ...] = (
    "numpy", "torch", "transformers", "datasets", "sympy", "rich", "pydantic", "click", "yaml",
)  # fmt: skip
CODE_PACKAGES: tuple[str, ...] = STDLIB_PACKAGES + DEPENDENCY_PACKAGES
_TEST_DIRS = {"test", "tests", "idle_test", "testing", "_testing"}


def _is_test_path(rel: Path) -> bool:
    name = rel.name
    return (
        any(part in _TEST_DIRS for part in rel.parts[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name in {"conftest.py", "test.py", "tests.py"}
    )


def package_root(name: str) -> Path:
    """Folder (or single ``.py`` file) of a top-level module, stdlib or installed.

    Raises:
        InputError: if it is not importable here.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise InputError(
            f"the code datasets read the source of package {name!r}, which is not installed; "
            f"install it (`pip install {name}`) or pass packages=[...] without it"
        )
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def _functions_in(path: Path, min_chars: int, max_chars: int) -> list[str]:
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if node.name.startswith("test") or node.end_lineno is None:
            continue
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        text = textwrap.dedent("\n".join(lines[start : node.end_lineno]))
        if min_chars <= len(text) <= max_chars:
            out.append(text)
    return out


@functools.lru_cache(maxsize=64)
def package_functions(
    name: str, *, max_files: int, min_chars: int = 120, max_chars: int = 4000
) -> list[tuple[str, str]]:
    """``(file group key, function source)`` of a package's non-test files.

    At most ``max_files`` files are parsed, chosen by a fixed hash of their path, so big
    packages (torch, transformers) stay cheap and the choice is the same on every build.
    """
    root = package_root(name)
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    rels = [
        (f, Path(name) / f.relative_to(root)) if root.is_dir() else (f, Path(f.name)) for f in files
    ]
    rels = [(f, rel) for f, rel in rels if not _is_test_path(rel)]
    rels.sort(key=lambda fr: unit_hash("code-files", fr[1].as_posix()))
    out = []
    for path, rel in rels[:max_files]:
        out += [(rel.as_posix(), text) for text in _functions_in(path, min_chars, max_chars)]
    return out


def _stdlib_modules() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    names = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    skip = {"test", "idlelib", "turtledemo", "this", "antigravity", "lib2to3", "distutils"}
    return sorted(n for n in names - skip if n.isidentifier())


def _sample(items: list[tuple[str, str]], k: int, salt: str) -> list[tuple[str, str]]:
    return sorted(items, key=lambda it: unit_hash(salt, it[1]))[:k]


def build_code_corpus(*, seed: int, per_package: int, max_files: int) -> list[dict]:
    """Rows of ``code``: up to ``per_package`` functions of each stdlib module and dependency."""
    rows: list[dict[str, Any]] = []
    for name in [*_stdlib_modules(), *DEPENDENCY_PACKAGES, "idlelib"]:
        items = package_functions(name, max_files=max_files)
        for _, text in _sample(items, per_package, f"code-corpus/{seed}"):
            rows.append({"text": text, "group": text})
    return rows


def build_code_package(
    *, seed: int, per_package: int, max_files: int, max_chars: int
) -> list[dict]:
    """Rows of ``code-package``: function source (cut at ``max_chars``) -> top-level package."""
    rows: list[dict[str, Any]] = []
    for name in CODE_PACKAGES:
        items = package_functions(name, max_files=max_files)
        for _, text in _sample(items, per_package, f"code-task/{seed}"):
            rows.append({"text": text[:max_chars], "group": text, "label": name})
    return rows


_MAX_ARGS_CHARS = 120


def name_prompt(source: str, *, max_doc_chars: int = 300) -> tuple[str, str] | None:
    """``(prompt, name)`` of a function source, or None without a public name and a docstring.

    The prompt is the signature with the name hidden and the docstring's first paragraph
    (whitespace collapsed, cut at ``max_doc_chars``)::

        def ?(path, mode='r'):
            \"\"\"Open a file and return a stream.\"\"\"
    """
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError, ValueError):
        return None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
        return None
    doc = ast.get_docstring(node)
    summary = " ".join(doc.split("\n\n", 1)[0].split()) if doc else ""
    if len(summary) < 10:
        return None
    if len(summary) > max_doc_chars:
        summary = summary[:max_doc_chars].rsplit(" ", 1)[0] + " ..."
    asynchronous = "async " if isinstance(node, ast.AsyncFunctionDef) else ""
    args = ast.unparse(node.args)
    if len(args) > _MAX_ARGS_CHARS:  # a long list of options says little more than its start
        args = args[:_MAX_ARGS_CHARS].rsplit(",", 1)[0] + ", ..."
    return f'{asynchronous}def ?({args}):\n    """{summary}"""', node.name


def build_code_name(*, seed: int, per_package: int, max_files: int) -> list[dict]:
    """Rows of ``code-name``: signature (name hidden) + docstring summary -> function name."""
    rows: list[dict[str, Any]] = []
    for name in CODE_PACKAGES:
        funcs = package_functions(name, max_files=max_files)
        items = [(text, name_prompt(text)) for _, text in funcs]
        usable = [(text, made) for text, made in items if made is not None]
        usable.sort(key=lambda it: unit_hash(f"code-name/{seed}", it[0]))
        for text, (prompt, fname) in usable[:per_package]:
            rows.append({"text": prompt, "target": fname, "label": name, "group": text})
    return rows


_SOURCE = ("python-stdlib", *DEPENDENCY_PACKAGES)
_LICENCE = "PSF-2.0 (stdlib); BSD/Apache-2.0/MIT (dependencies, see each package)"

register_dataset(
    DatasetSpec(
        name="code",
        kind="corpus",
        domain="code",
        builder=build_code_corpus,
        source=_SOURCE,
        licence=_LICENCE,
        description="Python functions from the stdlib and installed dependencies (no tests)",
        options={"per_package": 100, "max_files": 40},
    )
)

register_dataset(
    DatasetSpec(
        name="code-package",
        kind="task",
        domain="code",
        builder=build_code_package,
        source=_SOURCE,
        licence=_LICENCE,
        description="Python function -> top-level package (20 classes: 11 stdlib + 9 deps)",
        options={"per_package": 600, "max_files": 40, "max_chars": 1500},
        train_per_class=400,
        eval_per_class=50,
        label_names=CODE_PACKAGES,
    )
)

register_dataset(
    DatasetSpec(
        name="code-name",
        kind="generation",
        domain="code",
        builder=build_code_name,
        source=_SOURCE,
        licence=_LICENCE,
        description="Signature (name hidden) + docstring summary -> function name, exact match",
        options={"per_package": 300, "max_files": 40},
        train_per_class=200,
        eval_per_class=25,
    )
)
