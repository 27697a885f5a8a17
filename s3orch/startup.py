"""What ``twistd s3orch`` does before it builds a gateway: check the config (the loader's errors,
the keys this build refuses, the encryption key files), find default-chain backend credentials,
and, for a ``server.processes`` group, bind the listeners and start the supervisor.  A problem
here exits 1 with one line per problem, never a traceback."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from s3orch.backend.credentials import CredentialError, CredentialProvider, resolve_default_chain
from s3orch.config import Config, ConfigError, load_config
from s3orch.config.model import BackendConfig
from s3orch.config.support import refusals
from s3orch.crypto.setup import key_file_issues
from s3orch.observe.logging import LogSettings
from s3orch.supervisor import Supervisor, bind_group, bind_listener, child_argv


def load_checked_config(path: str) -> Config:
    """The config at ``path``, or exit 1 naming every problem (one line each, on stderr).

    Problems are the loader's errors, then the keys that ask for something this build does not do
    (``s3orch.config.support``). The loader's warnings are printed too, and do not stop the start.
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.errors:
            print(f"error: {issue}", file=sys.stderr)
        raise SystemExit(1) from None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    refused = refusals(config) + key_file_issues(config.encryption)  # key files are read at start-up
    for issue in refused:
        print(f"error: {issue}", file=sys.stderr)
    if refused:
        raise SystemExit(1)
    return config


def backend_credentials(
    configs: Sequence[BackendConfig], env: Mapping[str, str], reactor: Any, timeout: float
) -> dict[str, CredentialProvider]:
    """Backend name -> where its keys come from, for the backends with ``credential_source:
    default_chain`` (the others sign with their keys from config.yaml).

    The chain is resolved once, here, for all of them: a chain that finds nothing is a
    CredentialError naming the backends, and s3orch does not start.
    """
    chained = [(index, b) for index, b in enumerate(configs) if b.credential_source == "default_chain"]
    if not chained:
        return {}
    try:
        provider = resolve_default_chain(env, reactor, timeout=timeout)
    except CredentialError as exc:
        first = chained[0][0]
        names = ", ".join(repr(b.name) for _, b in chained)
        raise CredentialError(
            f"backends[{first}].credential_source: default_chain for backend {names}: {exc}"
        ) from None
    return {b.name: provider for _, b in chained}


def parse_listen_addr(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> (interface, port)."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    return host, int(port)


def supervise(config: Config, reactor: Any, count: int, config_path: str, mode: str) -> Supervisor:
    """The parent of a ``server.processes`` group: binds the listeners, runs ``count`` gateways."""
    server = config.server
    metrics = config.telemetry.metrics
    addresses = {"s3": server.listen_addr}
    if metrics.enabled and metrics.listen:
        addresses["metrics"] = metrics.listen
    sockets: dict[str, socket.socket | list[socket.socket]] = {}
    for name, address in addresses.items():
        interface, port = parse_listen_addr(address)
        try:  # S3: a socket per child (the kernel spreads connections); metrics: one, shared
            sockets[name] = bind_group(interface, port, count) if name == "s3" else bind_listener(interface, port)
        except OSError as exc:  # the port is taken: said like twistd's own listener says it
            print(f"error: cannot listen on {address}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    observer = LogSettings(server.log_level, server.log_format).observer()
    supervisor = Supervisor(reactor, count, child_argv(config_path, mode), sockets, log_observer=observer)
    supervisor.forward_sighup()
    return supervisor
