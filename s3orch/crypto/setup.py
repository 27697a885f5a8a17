"""Building the envelope from ``encryption.*`` (the tap calls :func:`build_envelope`).

Vault/OpenBao Transit goes through ``hvac`` (blocking HTTP), so each call runs in the reactor's
thread pool; the token is renewed every ``renew_interval`` with RenewSelf, and a ``token_file`` is
re-read (and its mode checked: 0600 or stricter) at each renewal, so a rotated token is picked up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from s3orch.config.model import ConfigIssue, EncryptionConfig, VaultConfig
from s3orch.core.spool import Offload, run_here, thread_offload
from s3orch.crypto.envelope import Envelope
from s3orch.crypto.keys import (
    InThread,
    KeyError_,
    KeySource,
    LocalKeys,
    VaultKeys,
    check_token_file,
    decode_key,
    local_keys,
    read_key_file,
)
from s3orch.observe.metrics_crypto import ENCRYPTION_ERRORS

_log = Logger(namespace="s3orch.crypto")


def _in_thread(reactor: Any) -> InThread:
    if not IReactorThreads.providedBy(reactor):
        from twisted.internet.defer import maybeDeferred

        return lambda call: maybeDeferred(call)
    return lambda call: deferToThreadPool(reactor, reactor.getThreadPool(), call)


def vault_client(vault: VaultConfig) -> Any:
    """An ``hvac`` client for ``vault`` (token from ``token`` or the checked ``token_file``)."""
    import hvac  # a runtime dependency; imported here so a build without Vault never loads it

    token = vault.token or check_token_file(vault.token_file)
    verify: bool | str = vault.ca_cert or True
    return hvac.Client(url=vault.address, token=token, verify=verify)


class TokenRenewer:
    """Renews the Vault token every ``renew_interval`` (in a thread), re-reading ``token_file``."""

    def __init__(self, client: Any, vault: VaultConfig, in_thread: InThread, clock: IReactorTime) -> None:
        self.client = client
        self.vault = vault
        self._in_thread = in_thread
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.renew()))
        self._loop.clock = clock
        self.renewals = 0
        self.failures = 0

    def start(self) -> None:
        self._loop.start(self.vault.renew_interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def renew(self) -> None:
        def call() -> None:
            if self.vault.token_file:
                self.client.token = check_token_file(self.vault.token_file)
            self.client.auth.token.renew_self()

        try:
            await self._in_thread(call)
        except Exception as exc:  # logged and counted; the next tick tries again
            self.failures += 1
            ENCRYPTION_ERRORS.labels("renew", "vault").inc()
            _log.error("Vault token renewal failed: {error}", error=f"{type(exc).__name__}: {exc}")
            return
        self.renewals += 1


def key_source(config: EncryptionConfig, reactor: Any, client_factory: Callable[[VaultConfig], Any] = vault_client,
               ) -> tuple[KeySource, TokenRenewer | None]:
    """The configured key source (and the Vault token's renewer, not started)."""
    if config.vault is None:
        return local_keys(config), None
    previous = None
    if config.previous_keys:
        keys = {f"config-{i}": decode_key(k) for i, k in enumerate(config.previous_keys, start=1)}
        previous = LocalKeys(keys, "config-1")
    try:
        client = client_factory(config.vault)
    except OSError as exc:
        raise KeyError_(f"encryption.vault: {exc}") from None
    in_thread = _in_thread(reactor)
    keys_ = VaultKeys(client, config.vault.key_name, config.vault.mount_path or "transit", in_thread, previous)
    return keys_, TokenRenewer(client, config.vault, in_thread, reactor)


def key_file_issues(config: EncryptionConfig) -> list[ConfigIssue]:
    """What is wrong with the key files ``config`` names, checked at start-up (the config checks
    do not read files: ``validate`` may run elsewhere): ``master_key_file`` must hold exactly 32
    raw bytes, a Vault ``token_file`` must be readable and mode 0600 or stricter."""
    if not config.enabled:
        return []
    issues: list[ConfigIssue] = []
    if config.master_key_file:
        try:
            read_key_file(config.master_key_file)
        except (OSError, KeyError_) as exc:
            issues.append(ConfigIssue("encryption.master_key_file", str(exc)))
    if config.vault is not None and config.vault.token_file:
        try:
            check_token_file(config.vault.token_file)
        except (OSError, KeyError_) as exc:
            issues.append(ConfigIssue("encryption.vault.token_file", str(exc)))
    return issues


def build_envelope(
    config: EncryptionConfig, reactor: Any, spool_dir: str | None
) -> tuple[Envelope | None, TokenRenewer | None]:
    """The envelope for ``config`` (None while encryption is off and no key is configured:
    encrypted records then answer 500, never ciphertext)."""
    has_key = bool(config.master_key or config.master_key_file or config.vault is not None)
    if not config.enabled and not has_key:
        return None, None
    keys, renewer = key_source(config, reactor)
    offload: Offload = thread_offload(reactor) if reactor is not None else run_here
    envelope = Envelope(keys, chunk_size=config.chunk_size, spool_dir=spool_dir, offload=offload,
                        enabled=config.enabled)
    return envelope, renewer
