"""How a config key is declared (``knob``, ``hidden``) and how config problems are reported.

The field metadata ``knob`` records drives the loader (``s3orch.config.decode`` and
``s3orch.config.checks``); the model (``s3orch.config.model``) only declares keys with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["ConfigError", "ConfigIssue", "hidden", "knob"]

T = TypeVar("T")


def knob(
    default: T,
    *,
    kind: str | None = None,
    min_value: float | None = None,
    positive: bool = False,
    empty_default: bool = False,
    secret: bool = False,
    aliases: tuple[str, ...] = (),
) -> T:
    """Declare a config key with its default and the loader's rules for it."""
    metadata: dict[str, Any] = {
        "kind": kind,
        "min": min_value,
        "positive": positive,
        "empty_default": empty_default,
        "aliases": aliases,
    }
    result: T = field(default=default, repr=not secret, metadata=metadata)
    return result


def hidden(default: str = "") -> str:
    """A string key whose value must never appear in logs or reprs."""
    return knob(default, secret=True)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: the key path (``backends[1].quota_bytes``) and what is wrong."""

    path: str
    message: str
    line: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """Every problem found in a config file at once, so an operator fixes them in one pass."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(issue) for issue in self.errors))
