"""The object service's view of encryption: seal a payload for a backend, open a stored extent.

:class:`Envelope` is built by the tap when ``encryption.enabled`` and handed to
:class:`~s3orch.core.objects.ObjectService`; with it, every PUT stores ciphertext and every read
of an encrypted record decrypts.  Without it (encryption off) encrypted records still read, as
long as a key source is configured; otherwise they answer 500 (never the ciphertext).

This is the one seam between the core and the format: a second chunked transform (compression,
which runs *before* encryption) wraps the payload before :meth:`Envelope.seal` and the stream
after :meth:`Envelope.open_extent`, without either knowing of the other.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from twisted.logger import Logger

from s3orch.backend.interface import BackendStream
from s3orch.core.extents import open_extents
from s3orch.core.spool import Offload, run_here
from s3orch.crypto.format import DEFAULT_CHUNK_SIZE, DecryptionError, StreamParams, new_dek, new_identity
from s3orch.crypto.keys import KeySource
from s3orch.crypto.streams import CiphertextRejected, DecryptingStream, encrypt_spool, plan
from s3orch.observe.metrics_crypto import ENCRYPTION_ERRORS
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.store.records import Extent, Location, ObjectRecord

_log = Logger(namespace="s3orch.crypto")

#: Opens a stored byte range (None: all) on one of the copies, failing over between them.
StoredOpener = Callable[[Sequence[Location], "tuple[int, int] | None"], Awaitable[tuple[BackendStream, Location]]]


@dataclass(frozen=True)
class Sealed:
    """A payload's ciphertext and what the record must keep to open it again."""

    payload: Payload  # the ciphertext spool (the caller closes it)
    wrapped_dek: str  # base64
    key_id: str
    crypto_id: str  # hex

    def stamp(self, record: ObjectRecord) -> ObjectRecord:
        """``record`` marked as this sealed write's."""
        return replace(
            record, encrypted=True, wrapped_dek=self.wrapped_dek, key_id=self.key_id, crypto_id=self.crypto_id
        )


class Envelope:
    """Per-object data keys under the configured master key; chunked AES-256-GCM data."""

    def __init__(
        self,
        keys: KeySource,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        spool_dir: str | None = None,
        offload: Offload = run_here,
        enabled: bool = True,
    ) -> None:
        self.keys = keys
        self.chunk_size = chunk_size
        self.spool_dir = spool_dir
        self.offload = offload
        #: False: reads of encrypted records only (``decrypt-existing`` left some, or a test).
        self.enabled = enabled

    async def new_key(self) -> tuple[bytes, str, str]:
        """A fresh data key, wrapped: ``(dek, wrapped in base64, key id)``; 503 when the key
        service (Vault) fails."""
        dek = new_dek()
        try:
            wrapped, key_id = await self.keys.wrap(dek)
        except Exception as exc:
            _log.error("encryption key service failed: {error}", error=str(exc))
            ENCRYPTION_ERRORS.labels("encrypt", "key_wrap").inc()
            raise errors.ServiceUnavailable("The encryption key service is unavailable.") from exc
        return dek, base64.b64encode(wrapped).decode("ascii"), key_id

    async def seal(self, plain: Payload, part_number: int = 0) -> Sealed:
        """Encrypt ``plain`` under a fresh data key into a new spool."""
        (dek, wrapped, key_id), identity = await self.new_key(), new_identity()
        params = StreamParams(dek, identity, part_number, plain.length, self.chunk_size)
        stored = await encrypt_spool(plain, params, spool_dir=self.spool_dir, offload=self.offload)
        return Sealed(stored, wrapped, key_id, identity.hex())

    async def data_key(self, record: ObjectRecord) -> bytes:
        """The record's DEK; 500 when it cannot be unwrapped (wrong key, corrupt row)."""
        try:
            wrapped = base64.b64decode(record.wrapped_dek, validate=True)
            return await self.keys.unwrap(wrapped, record.key_id)
        except (DecryptionError, ValueError) as exc:
            _log.error("data key of {bucket}/{key} does not unwrap: {error}", bucket=record.bucket,
                       key=record.key, error=str(exc))
            raise errors.InternalError("The object's data key could not be unwrapped.") from exc
        except Exception as exc:
            _log.error("encryption key service failed: {error}", error=str(exc))
            raise errors.ServiceUnavailable("The encryption key service is unavailable.") from exc

    def params(self, record: ObjectRecord, extent: Extent, dek: bytes) -> StreamParams:
        return StreamParams(dek, bytes.fromhex(record.crypto_id), extent.part_number, extent.size, self.chunk_size)

    async def open_extent(
        self,
        record: ObjectRecord,
        extent: Extent,
        byte_range: tuple[int, int] | None,
        opener: StoredOpener,
        dek: bytes | None = None,
    ) -> tuple[BackendStream, Location]:
        """The plaintext of ``byte_range`` (within the extent; None: all) of an encrypted extent:
        only the chunks covering it are fetched.  A stored object of the wrong length is
        refused before any byte (500)."""
        if dek is None:
            dek = await self.data_key(record)
        params = self.params(record, extent, dek)
        _, stored_range = plan(params, byte_range)
        stream, location = await opener(extent.locations, stored_range)
        try:
            return DecryptingStream(stream, params, byte_range), location
        except CiphertextRejected as exc:
            stream.cancel()
            raise errors.InternalError("The stored object failed its integrity check.") from exc

    async def open_record(
        self, record: ObjectRecord, byte_range: tuple[int, int] | None, opener: StoredOpener
    ) -> tuple[BackendStream, Location]:
        """Open (the inclusive plaintext ``byte_range`` of) an encrypted object: one data key
        unwrap, then each extent decrypted on its own (a multi-extent object streams them in
        turn, each fetching only the chunks it covers)."""
        dek = await self.data_key(record)

        async def open_one(extent: Extent, sub_range: tuple[int, int] | None) -> tuple[BackendStream, Location]:
            return await self.open_extent(record, extent, sub_range, opener, dek)

        if record.parts or len(record.locations) > 1:
            return await open_extents(record.extents, record.size, byte_range, open_one)
        return await open_one(record.extents[0], byte_range)


def require(envelope: Envelope | None) -> Envelope:
    """The envelope an encrypted record needs; 500 (never the ciphertext) without a key source."""
    if envelope is None:
        raise errors.InternalError("The object is encrypted and no encryption key is configured.")
    return envelope
