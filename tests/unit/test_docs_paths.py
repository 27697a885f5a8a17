"""Every file, test and module the docs cite exists.

Docs rot silently when code moves: ``docs/architecture.rst`` names modules, functions' homes
and the tests that hold each invariant, and a split or rename would leave it pointing at
nothing.  This reads every inline literal (````...````) in ``docs/*.rst`` and ``README.rst``
and checks the ones that name something in the repository:

- a path under a top-level directory (``s3orch/``, ``tests/``, ``tools/``, ``docs/``, ``sql/``,
  ...): it exists (a ``*`` pattern matches something; ``<engine>``/``NNNN`` placeholders are
  checked up to the placeholder); ``path.py::test_name`` also needs that test in the file;
- a relative ``something.py`` (``store/interface.py``, ``test_contract.py::test_x``): a file
  of the repository ends with it (``s3orch/`` is looked in first);
- a dotted ``s3orch.x.y`` name: a module or package, or a name defined in one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_DIRS = ("s3orch", "tests", "tools", "docs", "sql", "packaging", "debian", "twisted")
SOURCE_DIRS = ("s3orch", "tests", "tools", "twisted")

_LITERAL = re.compile(r"``([^`\s]+)``")
_RELATIVE_PY = re.compile(r"[\w./*-]+\.py")
_DOTTED = re.compile(r"s3orch(\.\w+)+")


def documents() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.rst")) + [ROOT / "README.rst"]


def literals(text: str) -> Iterator[str]:
    for match in _LITERAL.finditer(text):
        yield match.group(1).rstrip(".,;:")


@cache
def _repo_files() -> tuple[str, ...]:
    found: list[str] = []
    for top in SOURCE_DIRS:
        found += [p.relative_to(ROOT).as_posix() for p in (ROOT / top).rglob("*.py")]
    return tuple(found)


def _has_test(path: Path, name: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", path.read_text(), re.M) is not None


def _check_rooted(path: str, test: str | None) -> str | None:
    cut = re.search(r"<|NNNN", path)
    if cut is not None:
        parent = path[: cut.start()].rsplit("/", 1)[0]
        return None if (ROOT / parent).is_dir() else f"no directory {parent}"
    if "*" in path:
        return None if list(ROOT.glob(path)) else f"nothing matches {path}"
    target = ROOT / path
    if not target.exists():
        return f"no such file or directory {path}"
    if test is not None and not (target.is_file() and _has_test(target, test)):
        return f"{path} has no test {test}"
    return None


def _check_relative(path: str, test: str | None) -> str | None:
    candidates = [f for f in _repo_files() if f == f"s3orch/{path}" or f.endswith("/" + path)]
    if "*" in path:
        candidates = [p.relative_to(ROOT).as_posix() for top in SOURCE_DIRS for p in (ROOT / top).rglob(path)]
    if not candidates:
        return f"no file of the repository is {path}"
    if test is not None and not any(_has_test(ROOT / c, test) for c in candidates):
        return f"no {path} has a test {test}"
    return None


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _check_dotted(name: str) -> str | None:
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:length])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not module.is_file():
            continue
        rest = parts[length:]
        if not rest or rest[0] in _top_level_names(module):
            return None
        return f"{'.'.join(parts[:length])} defines no {rest[0]}"
    return f"no module {name}"


def problem(literal: str) -> str | None:
    """What is wrong with one cited literal (None: fine, or not a reference to the repository)."""
    path, _, test = literal.partition("::")
    if path.split("/", 1)[0] in TOP_DIRS and "/" in path:
        return _check_rooted(path, test or None)
    if _RELATIVE_PY.fullmatch(path):
        return _check_relative(path, test or None)
    if _DOTTED.fullmatch(path):
        return _check_dotted(path)
    return None


def test_every_path_and_module_cited_in_the_docs_exists() -> None:
    broken = []
    for doc in documents():
        for literal in literals(doc.read_text()):
            found = problem(literal)
            if found is not None:
                broken.append(f"{doc.relative_to(ROOT)}: ``{literal}``: {found}")
    assert broken == [], "docs cite what does not exist:\n" + "\n".join(broken)


def test_the_architecture_page_is_checked_and_cites_real_tests() -> None:
    text = (ROOT / "docs" / "architecture.rst").read_text()
    cited = [lit for lit in literals(text) if "::" in lit]
    assert len(cited) >= 20  # the invariants name their tests, and those are checked
    assert all(problem(lit) is None for lit in cited)
    assert "docs/architecture.rst" in (ROOT / "README.rst").read_text()


def test_the_checker_reports_what_does_not_exist() -> None:
    assert problem("s3orch/http/nowhere.py") == "no such file or directory s3orch/http/nowhere.py"
    assert problem("tests/unit/test_docs_paths.py::test_no_such_test") is not None
    assert problem("tests/unit/test_docs_paths.py::test_the_checker_reports_what_does_not_exist") is None
    assert problem("store/interface.py") is None
    assert problem("store/nowhere.py") is not None
    assert problem("s3orch.http.site.S3Channel") is None
    assert problem("s3orch.http.site.NoSuchThing") is not None
    assert problem("s3orch.nowhere") is not None
    assert problem("sql/<engine>/NNNN_name.sql") is None
    assert problem("/etc/s3orch/config.yaml") is None  # not in the repository: not checked
