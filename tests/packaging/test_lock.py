"""packaging/requirements.lock still satisfies setup.cfg's install_requires.

The Debian package installs exactly the lock (pip --require-hashes --no-deps), so a requirement
added to or tightened in setup.cfg without `make deb-lock` would ship a venv without it, or
with a version setup.cfg refuses. The build's `pip check` catches a missing transitive
dependency; this test catches the common case in a second, without building anything.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "packaging" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def install_requires() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def parse_lock(text: str) -> dict[str, tuple[Version, list[str]]]:
    """Name -> (pinned version, its sha256 hashes). A requirement that is not ``name==version``
    is an error: a range in the lock would let pip choose at build time."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", text):
        block = block.strip()
        if not block or block.startswith("#"):
            continue
        match = PIN.match(block)
        assert match, f"not a name==version pin: {block.splitlines()[0]!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        entries[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return entries


def unsatisfied(requirements: list[Requirement], lock: dict[str, tuple[Version, list[str]]]) -> list[str]:
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name not in lock:
            problems.append(f"{req}: not in the lock")
        elif not req.specifier.contains(lock[name][0], prereleases=True):
            problems.append(f"{req}: the lock pins {lock[name][0]}")
    return problems


def test_the_lock_pins_every_install_requirement_to_a_version_setup_cfg_accepts() -> None:
    lock = parse_lock(LOCK.read_text())
    assert unsatisfied(install_requires(), lock) == [], "run `make deb-lock`"


def test_every_locked_distribution_has_a_sha256_hash() -> None:
    lock = parse_lock(LOCK.read_text())
    assert lock, "the lock is empty"
    assert [name for name, (_, hashes) in lock.items() if not hashes] == []


def test_a_requirement_missing_from_the_lock_or_outside_its_pin_is_reported() -> None:
    lock = parse_lock("twisted==24.7.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    problems = unsatisfied([Requirement("Twisted[tls]>=24.10"), Requirement("klein>=24.8")], lock)
    assert problems == ["Twisted[tls]>=24.10: the lock pins 24.7.0", "klein>=24.8: not in the lock"]
