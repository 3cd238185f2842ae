"""A small typed registry with "did you mean" errors.

Every pluggable family (merge methods, datasets, model defaults, architectures)
is a :class:`Registry`. Entries are added with the ``register`` decorator and
looked up by name; YAML keys equal registry keys.

Example:
    >>> COLORS: Registry[str] = Registry("color")
    >>> COLORS.add("red", "#f00")
    >>> COLORS.get("red")
    '#f00'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from modularevo.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to entries of one kind.

    Args:
        kind: what the entries are, used in error messages ("merge method").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._frozen = False

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``.

        Raises:
            ValueError: if the name is not lower-case snake/kebab case, is taken,
                or the registry is frozen.
        """
        if self._frozen:
            raise ValueError(f"the {self.kind} registry is frozen; cannot add {name!r}")
        if not name or name != name.lower() or " " in name:
            raise ValueError(f"{self.kind} names must be lower case without spaces, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry (for tests and plugins that clean up).

        Raises:
            UnknownNameError: if ``name`` is not registered.
            ValueError: if the registry is frozen.
        """
        if self._frozen:
            raise ValueError(f"the {self.kind} registry is frozen; cannot remove {name!r}")
        entry = self.get(name)
        del self._entries[name]
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            UnknownNameError: naming the closest registered names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The error text for an unknown ``name``: close matches, then every valid name."""
        close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}.{hint} "
            f"Known {self.kind}s: {', '.join(sorted(self._entries))}."
        )

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """All (name, entry) pairs, sorted by name."""
        return sorted(self._entries.items())

    def freeze(self) -> None:
        """Refuse further registrations."""
        self._frozen = True

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
