"""User-facing error types.

Every error a user can cause (bad config, bad input file, unknown name) is a
:class:`ModularEvoError`. The CLI prints these as one clear message without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ModularEvoError(Exception):
    """Base class of errors caused by user input, not by a bug."""


class ConfigError(ModularEvoError):
    """A config file or override is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


class InputError(ModularEvoError):
    """An input model, tensor, mask or dataset does not fit what was expected."""


class UnknownNameError(ModularEvoError, KeyError):
    """A registry lookup failed; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""
