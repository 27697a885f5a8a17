"""Configs for tests that use s3orch as a library: YAML text in, the checked ``Config`` out."""

from __future__ import annotations

from collections.abc import Mapping

from s3orch.config import Config, ConfigError, load_config_from_string
from s3orch.config.support import refusals

__all__ = ["config_from_string"]


def config_from_string(text: str, env: Mapping[str, str] | None = None) -> Config:
    """The :class:`~s3orch.config.Config` s3orch would start with from the config.yaml ``text``.

    The same checks as at start-up: the loader's, then the refusal of keys that ask for
    something this build does not do; any problem raises :class:`~s3orch.config.ConfigError`
    naming every key at fault.  ``env`` supplies the ``${VAR}`` values; by default there are
    none, so a test never depends on the environment it happens to run in.
    """
    config = load_config_from_string(text, {} if env is None else env)
    refused = refusals(config)
    if refused:
        raise ConfigError(refused)
    return config
