"""What the shipped package holds: the wheel pip builds from this checkout, which is exactly what
``make deb`` installs (dh-virtualenv runs ``pip install`` on the source tree).

The developer tools (``tools/``: the load generator and the demo) and the test helpers
(``tests/``: servers, gateway processes, PostgreSQL clusters) must not be in it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: What a build of the checkout does not need (and would be slow or wrong to copy).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "__pycache__", ".demo", "build", "dist", "*.egg-info",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "bench-results", "dropin.cache",
)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """File names inside the wheel built from a copy of the checkout (tools/ and tests/ included
    in the copy, so their absence from the wheel is the packaging's doing)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    assert (source / "tools" / "bench").is_dir() and (source / "tests" / "support").is_dir()
    out = work / "out"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
         "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = out.glob("s3orch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_ships_the_gateway_its_plugin_and_its_migrations(wheel_names: list[str]) -> None:
    assert "s3orch/tap.py" in wheel_names
    assert "twisted/plugins/s3orch_plugin.py" in wheel_names
    assert any(n.endswith("/data/share/s3orch/sql/sqlite/0001_initial.sql") for n in wheel_names)
    assert any(n.endswith("/data/share/s3orch/sql/postgres/0001_initial.sql") for n in wheel_names)


def test_wheel_holds_no_tools_and_no_tests(wheel_names: list[str]) -> None:
    leaked = [n for n in wheel_names if n.split("/", 1)[0] in ("tools", "tests")]
    assert leaked == []


def test_wheel_holds_no_load_generator_demo_or_process_helpers(wheel_names: list[str]) -> None:
    testing = [n for n in wheel_names if n.startswith("s3orch/testing/")]
    assert "s3orch/testing/__init__.py" in testing
    for name in ("bench", "demo", "postgres", "servers", "gateway"):
        assert not [n for n in testing if n.startswith(f"s3orch/testing/{name}")], name
    assert not [n for n in wheel_names if "/bench" in n or "/demo" in n]


def test_debian_install_list_names_no_tools_or_tests() -> None:
    """debian/s3orch.install copies files into the .deb beside the venv: none from tools/ or tests/."""
    sources = [
        line.split()[0]
        for line in (ROOT / "debian" / "s3orch.install").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sources, "debian/s3orch.install lists nothing: this check would prove nothing"
    assert [s for s in sources if s.split("/", 1)[0] in ("tools", "tests")] == []
