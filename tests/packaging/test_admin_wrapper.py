"""packaging/s3orch-admin (the package's /usr/bin/s3orch-admin): how it reads the service's
environment file and the caller's --config paths.

The file must mean to the wrapper what it means to systemd's EnvironmentFile=, or
`sudo s3orch-admin validate` checks other secrets than the service uses. test_deb.py shows,
with a real systemd, that the service authenticates with the secret these rules give.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def wrapper() -> ModuleType:
    path = ROOT / "packaging" / "s3orch-admin"
    loader = importlib.machinery.SourceFileLoader("s3orch_admin_wrapper", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_values_are_read_as_systemd_reads_an_environment_file() -> None:
    text = (
        "# a comment\n"
        "; another\n"
        "PLAIN=value\n"
        "  SPACED =  padded value  \n"
        "DOLLAR=pa$$word${HOME}\n"
        'DOUBLE="a \\"quoted\\" \\$x \\\\ \\n kept"\n'
        "SINGLE='verbatim \\n $x \"q\"'\n"
        "UNQUOTED_ESCAPE=a\\ b\\\\c\n"
        "CONTINUED=first \\\nsecond\n"
        'INNER=quote"s stay"\n'
        "EMPTY=\n"
        "not an assignment\n"
        "# a comment continued by a backslash \\\n"
        "SWALLOWED=1\n"
        "AFTER=2"
    )
    assert wrapper().parse_env_file(text) == {
        "PLAIN": "value",
        "SPACED": "padded value",
        "DOLLAR": "pa$$word${HOME}",
        "DOUBLE": 'a "quoted" $x \\ \\n kept',
        "SINGLE": 'verbatim \\n $x "q"',
        "UNQUOTED_ESCAPE": "a b\\c",
        "CONTINUED": "first second",
        "INNER": 'quote"s stay"',
        "EMPTY": "",
        "AFTER": "2",
    }


def test_the_shipped_environment_file_sets_only_pythonunbuffered() -> None:
    text = (ROOT / "packaging" / "s3orch.default").read_text()
    assert wrapper().parse_env_file(text) == {"PYTHONUNBUFFERED": "1"}


def test_a_relative_config_path_names_the_callers_file_in_every_spelling() -> None:
    absolute = wrapper().absolute_config_args
    cwd = "/home/op"
    assert absolute(["validate", "--config", "c.yaml"], cwd) == ["validate", "--config", "/home/op/c.yaml"]
    assert absolute(["validate", "-config", "sub/c.yaml"], cwd) == [
        "validate",
        "-config",
        "/home/op/sub/c.yaml",
    ]
    assert absolute(["validate", "-c", "c.yaml"], cwd) == ["validate", "-c", "/home/op/c.yaml"]
    assert absolute(["validate", "-cc.yaml"], cwd) == ["validate", "-c/home/op/c.yaml"]
    assert absolute(["validate", "--config=c.yaml"], cwd) == ["validate", "--config=/home/op/c.yaml"]
    assert absolute(["validate", "-config=/etc/x.yaml"], cwd) == ["validate", "-config=/etc/x.yaml"]
    assert absolute(["migrate", "--config", "/etc/s3orch/config.yaml"], cwd) == [
        "migrate",
        "--config",
        "/etc/s3orch/config.yaml",
    ]
    assert absolute(["version"], cwd) == ["version"]
