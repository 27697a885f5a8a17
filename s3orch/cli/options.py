"""Options shared by ``s3orch-admin`` commands."""

from __future__ import annotations

import click

DEFAULT_CONFIG = "config.yaml"


def config_option(function: click.decorators.FC) -> click.decorators.FC:
    """``--config``/``-config``/``-c FILE``: the config file a command reads.

    ``S3ORCH_CONFIG`` stands in for a missing flag: the Debian package's /usr/bin/s3orch-admin
    sets it to the service's /etc/s3orch/config.yaml.
    """
    return click.option(
        "-c",
        "--config",
        "-config",
        "config_path",
        default=DEFAULT_CONFIG,
        show_default=True,
        envvar="S3ORCH_CONFIG",
        show_envvar=True,
        metavar="FILE",
        help="Configuration file.",
    )(function)
