"""Write an output folder atomically and exclusively: claim it, build it beside, rename.

* :func:`claim_output` holds an exclusive lock (``.<name>.lock`` beside the output)
  for the whole run, so a second run into the same output is refused at once.
* :func:`atomic_dir` builds the output in a hidden ``.<name>.tmp-*`` folder and renames
  it into place at the end. A failed or killed job leaves at most that hidden folder,
  never a half-written output under the requested name; leftovers of killed runs
  (``.<name>.tmp-*``, ``.<name>.old-*``) are removed by the next run into the same output.
* Files and folders are created with the user's umask (``tempfile`` alone gives 0600/0700).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modularevo.errors import InputError

try:  # POSIX; elsewhere outputs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_HELD: set[Path] = set()


def user_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | Path, *, folder: bool) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if folder else 0o666) & ~user_umask())


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _check_target(target: Path) -> None:
    """Refuse outputs that cannot be a folder of their own (``.``, ``/``, the cwd's parents)."""
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if not target.name or resolved == cwd or resolved in cwd.parents:
        raise InputError(
            f"output {str(target)!r} is the current folder or one of its parents; "
            "write the output into a new folder, e.g. `out/`"
        )


def check_output_path(target: str | Path, *, overwrite: bool = False) -> None:
    """Check early (before any work) that ``target`` can become a new output.

    Raises:
        InputError: ``target`` is the current folder, exists without ``overwrite``, or
            has a file among its parents.
    """
    target = Path(target)
    _check_target(target)
    if target.exists() and not overwrite:
        _refuse_existing(target)
    bad = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if bad is not None:
        raise InputError(
            f"cannot create output {str(target)!r}: {str(bad)!r} is a file, not a folder; "
            "choose an output path whose parents are folders"
        )


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        bad = next((p for p in [target.parent, *target.parent.parents] if p.is_file()), None)
        raise InputError(
            f"cannot create output {str(target)!r}: {str(bad or target.parent)!r} is a file, "
            "not a folder; choose an output path whose parents are folders"
        ) from None


@contextlib.contextmanager
def claim_output(target: str | Path, *, enabled: bool = True) -> Iterator[Path]:
    """Hold an exclusive lock on output ``target`` for the duration of the block.

    The lock is ``.<name>.lock`` beside ``target``; the OS releases it when the process
    ends, however it ends, so a killed run never blocks the next one. Re-entrant within
    a process (a run that claims its folder may call helpers that claim it again).

    Args:
        target: the output file or folder.
        enabled: ``False`` yields without locking (non-main processes of a distributed run).

    Raises:
        InputError: another process holds the lock, or the parent cannot be created.
    """
    target = Path(target)
    _check_target(target)
    key = target.resolve()
    if not enabled or fcntl is None or key in _HELD:
        yield target
        return
    _make_parent(target)
    lock = _lock_path(target)
    fd = _lock_file(lock, target)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        try:
            yield target
        finally:
            _HELD.discard(key)
            with contextlib.suppress(OSError):
                lock.unlink()  # before unlocking: a waiting run then makes a fresh file
    finally:
        os.close(fd)


def _lock_file(lock: Path, target: Path) -> int:
    """Open and lock ``lock``; retry when a finishing run unlinked it meanwhile."""
    assert fcntl is not None
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise InputError(
                f"output {str(target)!r} is being written by another run (process {holder} "
                f"holds {str(lock)!r}); wait for it to finish or choose another output"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def remove_leftovers(target: str | Path) -> list[Path]:
    """Delete ``.<name>.tmp-*`` and ``.<name>.old-*`` left beside ``target`` by killed runs.

    Call it only while holding :func:`claim_output` (then no live run owns them).

    Returns:
        The paths removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    found = [
        p
        for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*")
        for p in target.parent.glob(pattern)
    ]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if found:
        log.warning("removed leftovers of an interrupted run: %s", ", ".join(map(str, found)))
    return found


def _refuse_existing(target: Path) -> None:
    raise InputError(
        f"output {str(target)!r} already exists; choose another path or pass --overwrite "
        "(`overwrite: true` in a config) to replace it"
    )


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``target`` when the block succeeds.

    The output is claimed (:func:`claim_output`) for the whole block; leftovers of
    killed runs are removed first. An existing ``target`` is replaced only with
    ``overwrite``, and only once the new folder is complete.

    Raises:
        InputError: ``target`` exists without ``overwrite``, another run writes it, or
            its parent is a file.
    """
    target = Path(target)
    with claim_output(target):
        if target.exists() and not overwrite:
            _refuse_existing(target)
        remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        apply_umask(tmp, folder=True)
        try:
            yield tmp
            _publish(tmp, target, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _publish(tmp: Path, target: Path, *, overwrite: bool) -> None:
    if not target.exists() and not target.is_symlink():
        os.replace(tmp, target)
        return
    if not overwrite:
        _refuse_existing(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(tmp, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _temp_file(path: Path) -> str:
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    apply_umask(tmp, folder=False)
    return tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = _temp_file(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = _temp_file(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_save_file(
    tensors: dict[str, Any], path: str | Path, *, metadata: dict[str, str] | None = None
) -> Path:
    """``safetensors.torch.save_file`` through a temporary file and an atomic rename.

    The metadata is written in sorted key order, so equal inputs give equal bytes
    (safetensors itself writes it in a per-process hash order).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tmp = _temp_file(path)
    try:
        save_file(tensors, tmp, metadata=metadata)
        if metadata and len(metadata) > 1:
            _sort_metadata(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header in place with ``__metadata__`` keys sorted (same length)."""
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
        header = json.loads(raw)
        meta = header.pop("__metadata__", None)
        if meta is None:
            return
        ordered = {"__metadata__": dict(sorted(meta.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            return  # never move the tensor data
        fh.seek(8)
        fh.write(text + b" " * (n - len(text)))
