"""Read a config file: ``${VAR}`` expansion, YAML, typed decoding, then every validation rule.

The steps follow s3-orchestrator (the Go product s3orch re-creates) so its config files load
unchanged: environment expansion over the whole text (``env``, Go's ``os.Expand``), then YAML, then
typed decoding (``decode``), normalisation and validation (``checks``). Unlike the Go product,
unknown keys are errors (with a did-you-mean hint), and every problem is collected before one
``ConfigError`` is raised, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from yaml.nodes import MappingNode

from s3orch.config.checks import Report, normalise, validate
from s3orch.config.decode import Decoder
from s3orch.config.env import expand_env
from s3orch.config.model import Config, ConfigError, ConfigIssue

__all__ = ["expand_env", "load_config", "load_config_from_string"]


def _yaml_issue(exc: yaml.YAMLError) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        line = int(mark.line) + 1
        return ConfigIssue(
            "yaml", f"{problem} (line {line}, column {int(mark.column) + 1})", line
        )
    return ConfigIssue("yaml", str(problem))


def load_config_from_string(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Parse and validate config text; raise ConfigError listing every problem.

    ``env`` supplies ``${VAR}`` values (default: the process environment).
    """
    expanded = expand_env(text, os.environ if env is None else env)
    try:
        root = yaml.compose(expanded, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc)]) from None
    if root is None:
        root = MappingNode("tag:yaml.org,2002:map", [])
    decoder = Decoder()
    config = decoder.dataclass(Config, root, "")
    report = Report(decoder.lines)
    config = normalise(config, report)
    validate(config, report)
    decoded_paths = {issue.path for issue in decoder.issues}
    errors: list[ConfigIssue] = list(decoder.issues)
    for issue in report.errors:
        # A key that failed to decode kept its default; don't also blame the default.
        if issue.path not in decoded_paths and issue not in errors:
            errors.append(issue)
    if errors:
        raise ConfigError(sorted(errors, key=_file_order))
    return dataclasses.replace(
        config, warnings=tuple(sorted(report.warnings, key=_file_order))
    )


def _file_order(issue: ConfigIssue) -> float:
    """Sort key listing issues in the order their keys appear in the file (file-wide ones last)."""
    return issue.line if issue.line is not None else math.inf


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the config file at ``path``; raise ConfigError on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue("config", f"cannot read {path}: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue("config", f"{path} is not UTF-8 text: {exc.reason}")]
        ) from None
    return load_config_from_string(text, env)
