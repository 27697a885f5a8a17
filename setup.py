"""s3orch packaging: metadata lives in setup.cfg; the SQL migrations ship as data files."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    # twisted/plugins has no __init__.py (it must not: it is Twisted's namespace),
    # so find: cannot see it; list it by hand so the plugin ships in wheels and the .deb.
    # Only s3orch is found: tools/ (make run, make bench) and tests/ never ship
    # (tests/integration/test_packaging.py checks the wheel).
    packages=find_packages(include=["s3orch", "s3orch.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["s3orch_plugin.py"], "s3orch.ui": ["templates/*.html", "static/*"]},
    data_files=[
        (f"share/s3orch/sql/{engine.name}", [str(p.relative_to(ROOT)) for p in sorted(engine.glob("*.sql"))])
        for engine in sorted((ROOT / "sql").iterdir())
        if engine.is_dir()
    ],
)
