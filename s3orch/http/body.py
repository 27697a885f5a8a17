"""Request bodies: decode, hash, cap and spool as the bytes arrive.

A body is never held whole in memory: it goes to a ``SpooledTemporaryFile``
(memory up to ``server.spool_memory_limit``, then ``server.spool_dir``).
Hashes (MD5 for the ETag, SHA-256 for the payload claim and backend signing,
the client's ``x-amz-checksum-*`` algorithm) are computed incrementally, so
verification costs no second pass.  A verified body is a
:class:`~s3orch.payload.Payload`, the value the core and the backends take: a
replayable spool, so a write can go to another backend when the first one fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from typing import BinaryIO

from s3orch.payload import Payload
from s3orch.s3 import errors, sigv4
from s3orch.s3.checksums import Checksum, new_checksum
from s3orch.s3.chunked import AwsChunkedDecoder


def parse_content_md5(value: str | None) -> bytes | None:
    """Decode Content-MD5 (base64 of 16 bytes) or raise InvalidDigest."""
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidDigest() from None
    if len(digest) != 16:
        raise errors.InvalidDigest()
    return digest


class RequestBody:
    """Incremental sink for one request body."""

    def __init__(
        self,
        *,
        max_size: int,
        declared_length: int | None,
        spool_memory_limit: int,
        spool_dir: str | None,
        decoder: AwsChunkedDecoder | None = None,
        content_md5: bytes | None = None,
        sha256_claim: str | None = None,
        checksum_header: tuple[str, str] | None = None,
        trailer_checksum: str | None = None,
    ) -> None:
        self.max_size = max_size
        self.declared_length = declared_length
        self._decoder = decoder
        self._content_md5 = content_md5
        self._sha256_claim = sha256_claim
        self._checksum_header = checksum_header
        self._trailer_checksum = trailer_checksum
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256()
        algorithm = checksum_header[0] if checksum_header else trailer_checksum
        self._checksum: Checksum | None = new_checksum(algorithm) if algorithm else None
        self._spool: BinaryIO = tempfile.SpooledTemporaryFile(  # type: ignore[assignment]  # has BinaryIO's methods
            max_size=spool_memory_limit, dir=spool_dir or None
        )
        self.received = 0
        self.failed: errors.S3Error | None = None
        self.discarded = False

    def feed(self, data: bytes) -> None:
        """Take raw (wire) bytes; raise an S3Error when the body must be refused."""
        if self.failed is not None or self.discarded:
            return
        try:
            if self._decoder is not None:
                data = self._decoder.feed(data)
                if not data:
                    return
            self.received += len(data)
            if self.received > self.max_size:
                raise errors.EntityTooLarge()
            if self.declared_length is not None and self.received > self.declared_length:
                raise errors.IncompleteBody(
                    "The request body is longer than the declared decoded content length."
                )
            self._md5.update(data)
            self._sha256.update(data)
            if self._checksum is not None:
                self._checksum.update(data)
            try:
                self._spool.write(data)
            except OSError as exc:  # spool disk full or failing: refuse, keep serving others
                raise errors.ServiceUnavailable("The gateway could not buffer the request body.") from exc
        except errors.S3Error as exc:
            self.failed = exc
            self.discard()
            raise

    def finish(self) -> Payload:
        """The body ended: verify framing, length and every digest; the verified payload."""
        if self.failed is not None:
            raise self.failed
        try:
            if self._decoder is not None:
                self._decoder.finish()
            if self.declared_length is not None and self.received != self.declared_length:
                raise errors.IncompleteBody()
            md5 = self._md5.digest()
            if self._content_md5 is not None and md5 != self._content_md5:
                raise errors.BadDigest()
            sha256_hex = self._sha256.hexdigest()
            claim = self._sha256_claim
            if claim and claim not in _NON_HASH_CLAIMS and claim.lower() != sha256_hex:
                raise errors.XAmzContentSHA256Mismatch(
                    ClientComputedContentSHA256=claim, S3ComputedContentSHA256=sha256_hex
                )
            checksum: tuple[str, str] | None = None
            if self._checksum is not None:
                actual = self._checksum.b64digest()
                algorithm = self._checksum.algorithm.upper()
                if self._checksum_header is not None:
                    expected = self._checksum_header[1]
                else:
                    trailers = self._decoder.trailers if self._decoder is not None else {}
                    expected = trailers.get(f"x-amz-checksum-{self._checksum.algorithm.lower()}", "")
                    if not expected:
                        raise errors.InvalidRequest(
                            "The trailing checksum declared in x-amz-trailer was not sent."
                        )
                if expected.strip() != actual:
                    raise errors.BadDigest(
                        f"The {algorithm} you specified did not match the calculated checksum."
                    )
                checksum = (algorithm, actual)
            self._spool.seek(0)
            return Payload(self._spool, self.received, md5.hex(), sha256_hex, checksum)
        except errors.S3Error as exc:
            self.failed = exc
            self.discard()
            raise

    def discard(self) -> None:
        """Drop spooled bytes (refused body, or the client went away)."""
        self.discarded = True
        try:
            self._spool.close()
        except OSError:
            pass


class DiscardedBody:
    """Sink for a body sent to an operation that takes none: counted, capped, dropped.

    Nothing is kept, so a thousand such requests cost no memory or disk; a body
    over ``max_size`` is refused (``MaxMessageLengthExceeded``), as AWS refuses an
    oversized request.
    """

    def __init__(self, *, max_size: int, declared_length: int | None) -> None:
        self.max_size = max_size
        self.declared_length = declared_length
        self.received = 0
        self.failed: errors.S3Error | None = None
        self.discarded = False
        if declared_length is not None and declared_length > max_size:
            raise errors.MaxMessageLengthExceeded()

    def feed(self, data: bytes) -> None:
        """Count raw bytes; raise once they exceed the cap."""
        if self.failed is not None or self.discarded:
            return
        self.received += len(data)
        if self.received > self.max_size:
            self.failed = errors.MaxMessageLengthExceeded()
            raise self.failed

    def finish(self) -> None:
        """The body ended: nothing to hand over (the operation takes no body)."""
        if self.failed is not None:
            raise self.failed

    def discard(self) -> None:
        """Nothing is held; stop counting."""
        self.discarded = True


_NON_HASH_CLAIMS = {
    sigv4.UNSIGNED_PAYLOAD,
    sigv4.STREAMING_PAYLOAD,
    sigv4.STREAMING_PAYLOAD_TRAILER,
    sigv4.STREAMING_UNSIGNED_TRAILER,
}
