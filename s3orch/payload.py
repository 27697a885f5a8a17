"""The bytes of one write, as they travel from the front door to a backend.

A request body (``s3orch.http.body``) or a copy source read back from a backend
(``s3orch.core.spool``) becomes one :class:`Payload`; the core places it
(``s3orch.core.objects``, ``s3orch.core.uploads``) and a backend client sends it
(``ObjectBackend.put_object``).  Nothing between those two ends looks inside:
they pass the value on.  So how the bytes are held (a spool today; a stream that
flows through, or an encrypting reader, later) is decided where a Payload is made
and where it is read, and no signature in between changes.

This module is a leaf (standard library only), so every layer may import it.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import BinaryIO, ClassVar


@dataclass(frozen=True, eq=False)
class Payload:
    """``length`` bytes with the digests a backend and a client answer need.

    * ``md5_hex``: the MD5 of the bytes (the ETag of a single-part object);
      :attr:`md5_b64` is its ``Content-MD5`` form.
    * ``sha256_hex``: the SHA-256 of the bytes, lower-case hex: what a backend
      request signs as ``x-amz-content-sha256`` (and the object's content hash).
    * ``checksum``: the flexible checksum, ``(ALGORITHM, base64)`` with the
      algorithm upper-case (``CRC32``, ``SHA256``...), when one was asked for.

    A Payload here is a **replayable spool**: the digests are known before
    the first backend call, and :meth:`reader` can be called again to send the
    same bytes to the next backend when one fails.  The other form,
    :class:`~s3orch.stream_payload.StreamPayload` (stream-through of large PUT
    bodies, :attr:`streaming` true), can be read only once and knows its digests
    only after it was read; backends read it through its producer, and the core
    fails over only while none of its bytes were sent.

    Small XML request bodies (a part list, an ACL) are Payloads too; their
    handlers read them through :attr:`file`, bounded.
    """

    #: A stream read once (``s3orch.stream_payload``), not a replayable spool.
    streaming: ClassVar[bool] = False

    file: BinaryIO
    length: int
    md5_hex: str
    sha256_hex: str
    checksum: tuple[str, str] | None = None

    @classmethod
    def from_bytes(cls, data: bytes, checksum: tuple[str, str] | None = None) -> Payload:
        """A payload of bytes already in memory (a small document, a test's body),
        with their digests computed here."""
        return cls(
            io.BytesIO(data),
            len(data),
            hashlib.md5(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
            checksum,
        )

    @property
    def md5_b64(self) -> str:
        """``Content-MD5``: the MD5 in base64."""
        return base64.b64encode(bytes.fromhex(self.md5_hex)).decode("ascii")

    @property
    def checksum_algorithm(self) -> str | None:
        """The flexible checksum's algorithm (upper-case), if there is one."""
        return self.checksum[0] if self.checksum is not None else None

    @property
    def checksum_value(self) -> str | None:
        """The flexible checksum's value (base64), if there is one."""
        return self.checksum[1] if self.checksum is not None else None

    def reader(self) -> BinaryIO:
        """The bytes from the first one, for one attempt to send them (rewinds the spool)."""
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        """Drop the bytes (the spool's file); the payload is unusable afterwards."""
        try:
            self.file.close()
        except OSError:
            pass
