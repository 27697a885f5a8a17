"""The master keys that wrap each object's data key (DEK), and where they come from.

Key ids are s3-orchestrator's, stored in the row next to the wrapped DEK:

* ``config-0``: the inline ``encryption.master_key``; ``config-1``, ``config-2``, ...: the
  ``previous_keys`` in order (they only unwrap: a rotation re-wraps their DEKs under the primary);
* ``file-0``: ``encryption.master_key_file`` (exactly 32 raw bytes);
* the Transit key's name for Vault/OpenBao (:class:`VaultKeys`).

A DEK is wrapped with AES-256-GCM under the master key: ``nonce (12) | ciphertext (32) | tag (16)``.
A row naming a key id this process does not know is logged, counted
(``s3o_encryption_unknown_key_id_total``) and tried with the primary key: a renamed source
(inline key moved to a file) keeps working, and a really unknown key fails authentication.

Both calls are asynchronous because Vault's are network round trips (run in a thread through
``hvac``, never on the reactor); the local keys answer at once.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from s3orch.config.model import EncryptionConfig
from s3orch.crypto.format import DEK_SIZE, NONCE_SIZE, DecryptionError
from s3orch.observe.metrics_crypto import ENCRYPTION_ERRORS, UNKNOWN_KEY_ID

_WRAP_AAD = b"s3orch-dek-v1"
_log = Logger(namespace="s3orch.crypto")


class KeyError_(Exception):
    """A key source is unusable (bad key file, Vault unreachable or refusing)."""


class KeySource(Protocol):
    """Wraps fresh DEKs under the primary key; unwraps under any configured key."""

    primary_id: str

    async def wrap(self, dek: bytes) -> tuple[bytes, str]:
        """``(wrapped DEK, key id)`` under the primary key."""
        ...

    async def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        """The DEK, or DecryptionError (wrong key, corrupt blob)."""
        ...

    def knows(self, key_id: str) -> bool:
        """Whether ``key_id`` names a configured key."""
        ...

    def is_current(self, wrapped: bytes, key_id: str) -> bool:
        """Whether ``wrapped`` is already wrapped by the primary key (a rotation skips it)."""
        ...


def decode_key(value: str) -> bytes:
    """A base64 master key, which must decode to 32 bytes."""
    key = base64.b64decode(value, validate=True)
    if len(key) != DEK_SIZE:
        raise ValueError(f"a master key has 32 bytes, not {len(key)}")
    return key


def read_key_file(path: str) -> bytes:
    """``master_key_file``: exactly 32 raw bytes."""
    with open(path, "rb") as handle:
        key = handle.read(DEK_SIZE + 1)
    if len(key) != DEK_SIZE:
        raise KeyError_(f"{path}: a key file holds exactly 32 bytes")
    return key


def wrap_local(master: bytes, dek: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(master).encrypt(nonce, dek, _WRAP_AAD)


def unwrap_local(master: bytes, wrapped: bytes) -> bytes:
    if len(wrapped) != NONCE_SIZE + DEK_SIZE + 16:
        raise DecryptionError("wrapped data key has the wrong length")
    try:
        return AESGCM(master).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _WRAP_AAD)
    except InvalidTag:
        raise DecryptionError("the data key does not unwrap under this master key") from None


class LocalKeys:
    """Inline or file master keys (plus ``previous_keys``), held in memory."""

    def __init__(self, keys: dict[str, bytes], primary_id: str) -> None:
        self._keys = dict(keys)
        self.primary_id = primary_id

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    async def wrap(self, dek: bytes) -> tuple[bytes, str]:
        return wrap_local(self._keys[self.primary_id], dek), self.primary_id

    def is_current(self, wrapped: bytes, key_id: str) -> bool:
        try:
            unwrap_local(self._keys[self.primary_id], wrapped)
        except DecryptionError:
            return False
        return key_id == self.primary_id

    async def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        """Under the key ``key_id`` names, then under the others: ids are positions in the config
        (``config-0`` is whichever key is primary now), so after an old primary moved to
        ``previous_keys`` its rows still name ``config-0``.  GCM makes a wrong key fail, never
        a wrong DEK."""
        master = self._keys.get(key_id)
        if master is None:
            _log.warn("unknown encryption key id {key_id}; trying the primary key", key_id=key_id)
            UNKNOWN_KEY_ID.inc()
            master = self._keys[self.primary_id]
        for candidate in (master, *(k for k in self._keys.values() if k is not master)):
            try:
                return unwrap_local(candidate, wrapped)
            except DecryptionError:
                continue
        ENCRYPTION_ERRORS.labels("decrypt", "key_unwrap").inc()
        raise DecryptionError("the data key does not unwrap under any configured master key")


def local_keys(config: EncryptionConfig) -> LocalKeys:
    """The inline/file key source of ``config`` (validated by the config checks already)."""
    keys: dict[str, bytes] = {}
    if config.master_key:
        keys["config-0"] = decode_key(config.master_key)
        primary = "config-0"
    elif config.master_key_file:
        keys["file-0"] = read_key_file(config.master_key_file)
        primary = "file-0"
    else:
        raise KeyError_("no inline or file master key configured")
    for index, value in enumerate(config.previous_keys, start=1):
        keys[f"config-{index}"] = decode_key(value)
    return LocalKeys(keys, primary)


def check_token_file(path: str) -> str:
    """The token in ``path``; refused unless only its owner may read it (0600 or stricter)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise KeyError_(f"{path}: token_file must have mode 0600 or stricter, not {mode:04o}")
    with open(path, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        raise KeyError_(f"{path}: token_file is empty")
    return token


#: Runs a blocking call off the reactor thread (``deferToThread`` in a gateway).
InThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


class VaultKeys:
    """Vault/OpenBao Transit: the master key never leaves Vault; DEKs are sent to be
    (un)wrapped through ``hvac`` in a thread.  Previous inline keys still unwrap locally."""

    def __init__(self, client: Any, key_name: str, mount_path: str, in_thread: InThread,
                 previous: LocalKeys | None = None) -> None:
        self._client = client
        self.primary_id = key_name
        self._mount = mount_path
        self._in_thread = in_thread
        self._previous = previous

    def knows(self, key_id: str) -> bool:
        return key_id == self.primary_id or (self._previous is not None and self._previous.knows(key_id))

    def is_current(self, wrapped: bytes, key_id: str) -> bool:
        return key_id == self.primary_id

    async def wrap(self, dek: bytes) -> tuple[bytes, str]:
        def call() -> bytes:
            answer = self._client.secrets.transit.encrypt_data(
                name=self.primary_id, plaintext=base64.b64encode(dek).decode("ascii"),
                mount_point=self._mount,
            )
            return str(answer["data"]["ciphertext"]).encode("ascii")

        try:
            return await self._in_thread(call), self.primary_id
        except Exception as exc:
            ENCRYPTION_ERRORS.labels("encrypt", "vault").inc()
            raise KeyError_(f"Vault transit encrypt failed: {type(exc).__name__}: {exc}") from None

    async def unwrap(self, wrapped: bytes, key_id: str) -> bytes:
        if key_id != self.primary_id and self._previous is not None and self._previous.knows(key_id):
            return await self._previous.unwrap(wrapped, key_id)
        if key_id != self.primary_id:
            _log.warn("unknown encryption key id {key_id}; trying the primary key", key_id=key_id)
            UNKNOWN_KEY_ID.inc()

        def call() -> bytes:
            answer = self._client.secrets.transit.decrypt_data(
                name=self.primary_id, ciphertext=wrapped.decode("ascii"), mount_point=self._mount,
            )
            return base64.b64decode(answer["data"]["plaintext"])

        try:
            dek: bytes = await self._in_thread(call)
        except Exception as exc:
            ENCRYPTION_ERRORS.labels("decrypt", "vault").inc()
            message = f"Vault transit decrypt failed: {type(exc).__name__}: {exc}"
            if type(exc).__name__ == "InvalidRequest":  # Vault refused the ciphertext itself
                raise DecryptionError(message) from None
            raise KeyError_(message) from None  # unreachable, sealed, token refused: the service
        if len(dek) != DEK_SIZE:
            raise DecryptionError("Vault returned a data key of the wrong length")
        return dek
