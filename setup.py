"""s3orch packaging: metadata lives in setup.cfg; the SQL migrations ship as data files."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent

setup(
    data_files=[
        (f"share/s3orch/sql/{engine.name}", [str(p.relative_to(ROOT)) for p in sorted(engine.glob("*.sql"))])
        for engine in sorted((ROOT / "sql").iterdir())
        if engine.is_dir()
    ],
)
