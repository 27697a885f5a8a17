"""What this build of s3orch does not do yet: one table, consulted at start-up and by ``validate``.

Every key of s3-orchestrator's config.yaml (the Go product s3orch is a drop-in for) is *accepted*,
so that an existing file loads. A key
that switches on behaviour this build does not have must not be accepted silently, though: an
operator who writes ``encryption.enabled: true`` and gets plaintext on the backends has been lied
to. So ``twistd s3orch`` (``s3orch.tap``) and ``s3orch-admin validate`` (``s3orch.cli.main``) refuse
such a file, one line per key::

    encryption.enabled: not supported by this build of s3orch (the key is accepted so that existing files load)

Each row names a key, when the file counts as asking for it, and (``covers``) the keys that only act
through it, which are therefore inert while it is off. A feature is "asked for" by its switch, or, for
a knob of behaviour this build has only in its default form, by any value other than the default:
a file that merely carries s3-orchestrator's defaults (its README's example config does) still
starts.

When a feature lands, delete its row. ``tests/unit/test_feature_support.py`` walks every key of the
config schema and demands, for each, either a row here (or a row that covers it) or a test that
proves the key is honoured, so a deleted row without a test fails there.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from s3orch.config.model import Config, ConfigIssue

__all__ = ["NOT_SUPPORTED", "UNSUPPORTED", "Unsupported", "covering_row", "refusals"]

NOT_SUPPORTED = "not supported by this build of s3orch (the key is accepted so that existing files load)"

_DEFAULTS = Config()


@dataclass(frozen=True)
class Unsupported:
    """One key this build accepts but does not act on."""

    #: The key as documented; ``[]`` stands for "every entry of the list".
    key: str
    #: The concrete key paths at which a loaded config asks for the feature (empty: it does not).
    active: Callable[[Config], list[str]]
    #: What to do instead, appended to the message (optional).
    hint: str = ""
    #: Keys (fnmatch patterns) that only act through this one: inert while it is not asked for.
    covers: tuple[str, ...] = ()

    def issues(self, config: Config) -> list[ConfigIssue]:
        suffix = f"; {self.hint}" if self.hint else ""
        return [ConfigIssue(path, NOT_SUPPORTED + suffix) for path in self.active(config)]


def _get(path: str) -> Callable[[Config], object]:
    return operator.attrgetter(path)


def _on(path: str) -> Callable[[Config], list[str]]:
    """Asked for when the value at ``path`` is true (a switch, a non-empty list or string)."""
    get = _get(path)
    return lambda config: [path] if get(config) else []


def _changed(path: str) -> Callable[[Config], list[str]]:
    """Asked for when the value at ``path`` differs from its default."""
    get = _get(path)
    default = get(_DEFAULTS)
    return lambda config: [path] if get(config) != default else []


def _default_of(path: str) -> str:
    value = _get(path)(_DEFAULTS)
    return f"remove it or set the default ({value!r})"


UNSUPPORTED: tuple[Unsupported, ...] = (
    # In s3-orchestrator "false" is its legacy write path (delete the bytes when the commit fails).
    # This build always writes a pending intent first; without the reaper, a failed commit's
    # reservation would stay forever. So only the default, true, is accepted.
    Unsupported(
        "write_path.pending_pattern.enabled",
        lambda config: [] if config.write_path.pending_pattern.enabled else ["write_path.pending_pattern.enabled"],
        hint="the legacy write path (false) is not implemented; remove the key or set true",
    ),
)


def refusals(config: Config, table: Iterable[Unsupported] = UNSUPPORTED) -> list[ConfigIssue]:
    """One issue per key of ``config`` that asks for something this build does not do."""
    return [issue for row in table for issue in row.issues(config)]


def covering_row(key: str, table: Iterable[Unsupported] = UNSUPPORTED) -> Unsupported | None:
    """The row that refuses ``key`` itself or makes it inert (``key`` uses ``[]`` for lists)."""
    for row in table:
        if row.key == key or any(fnmatch.fnmatchcase(key, pattern) for pattern in row.covers):
            return row
    return None
