"""Incremental ``aws-chunked`` decoder with chunk- and trailer-signature verification.

Clients that stream uploads (``x-amz-content-sha256: STREAMING-...``) frame
the body in chunks, each signed as a link of a chain seeded by the request
signature.  Storing that framing, or passing chunks on without checking
their signatures, is silent corruption and an integrity bypass; this decoder
strips the framing and fails closed.

It is a pure state machine: ``feed`` whatever bytes arrived, get back the
decoded payload available so far.  Payload bytes are emitted as they arrive
(a 16 MiB chunk is never buffered); a chunk's signature can only be checked
once the chunk ends, so on any exception the caller must discard everything
the decoder produced for this body.

Error mapping (fixed, so the HTTP layer can rely on it):

* body ended early (``finish`` before the final chunk / trailer) or decoded
  length different from ``x-amz-decoded-content-length``: ``IncompleteBody``;
* syntactically bad framing (chunk size not hex, missing CRLF after chunk
  data, over-long line, malformed or unexpected trailer, bytes after the end):
  ``InvalidRequest``;
* chunk larger than ``max_chunk_size``: ``InvalidRequest``;
* a chunk other than the last one smaller than 8 KiB: ``InvalidChunkSizeError``
  (AWS's rule, for signed and unsigned variants alike; it bounds how much
  framing and signature work one payload byte can cost);
* missing or wrong chunk / trailer signature: ``SignatureDoesNotMatch``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import Enum, auto

from s3orch.s3.errors import (
    IncompleteBody,
    InvalidChunkSizeError,
    InvalidRequest,
    S3Error,
    SignatureDoesNotMatch,
)
from s3orch.s3.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
)

__all__ = [
    "MAX_LINE",
    "MIN_CHUNK_SIZE",
    "MAX_TRAILERS",
    "AwsChunkedDecoder",
    "decoder_for_payload_hash",
    "is_streaming_payload",
]

#: Longest chunk-header or trailer line accepted (malformed input is refused within bounded memory).
MAX_LINE = 4096
#: Most trailer headers accepted.
MAX_TRAILERS = 16
#: Smallest size AWS accepts for a chunk that is not the last one carrying data.
MIN_CHUNK_SIZE = 8192

_HEX_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_TRAILER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_TRAILER_SIGNATURE = "x-amz-trailer-signature"


class _State(Enum):
    HEADER = auto()  # reading a chunk-header line
    DATA = auto()  # inside chunk data
    DATA_CR = auto()  # expecting the CR after chunk data
    DATA_LF = auto()  # expecting the LF after chunk data
    TRAILER = auto()  # after the final 0-size chunk: trailer lines / final CRLF
    DONE = auto()


def is_streaming_payload(payload_hash: str) -> bool:
    """True when ``x-amz-content-sha256`` announces an ``aws-chunked`` body."""
    return payload_hash in (
        STREAMING_PAYLOAD,
        STREAMING_PAYLOAD_TRAILER,
        STREAMING_UNSIGNED_TRAILER,
    )


class AwsChunkedDecoder:
    """Decode one ``aws-chunked`` body, verifying the signature chain as it goes.

    ``signed`` selects the ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD*`` variants
    (``signing_key``, ``seed_signature``, ``amz_date`` and ``scope`` come from
    the verified request, see ``sigv4.AuthResult``); ``trailer`` the ``-TRAILER``
    variants.  ``decoded_length`` is ``x-amz-decoded-content-length`` when sent.
    Every chunk followed by another data chunk must carry at least
    ``min_chunk_size`` bytes.
    """

    def __init__(
        self,
        *,
        signed: bool,
        trailer: bool,
        signing_key: bytes | None,
        seed_signature: str | None,
        amz_date: str | None,
        scope: str | None,
        decoded_length: int | None,
        max_chunk_size: int = 16 * 1024 * 1024,
        min_chunk_size: int = MIN_CHUNK_SIZE,
    ) -> None:
        if signed and (
            signing_key is None or seed_signature is None or not amz_date or not scope
        ):
            raise ValueError(
                "signed aws-chunked needs signing_key, seed_signature, amz_date, scope"
            )
        self._signed = signed
        self._trailer = trailer
        self._signing_key = signing_key or b""
        self._previous_signature = seed_signature or ""
        self._sts_prefix = f"\n{amz_date}\n{scope}\n"
        self._decoded_length = decoded_length
        self._max_chunk_size = max_chunk_size
        self._min_chunk_size = min_chunk_size
        self._chunks = 0  # chunk headers read so far
        self._previous_size = 0  # size of the chunk before the current one

        self._state = _State.HEADER
        self._line = bytearray()
        self._remaining = 0  # bytes of chunk data still to come
        self._chunk_signature = ""  # claimed signature of the current chunk
        self._hasher = hashlib.sha256()
        self._total = 0
        self._failed: S3Error | None = None
        self._trailer_lines = 0
        self._blank_before_trailers = False

        #: Trailer headers (lower-case names), once parsed.
        self.trailers: dict[str, str] = {}
        #: True once ``x-amz-trailer-signature`` was present and verified.
        self.trailer_signature_ok = False

    @property
    def decoded_total(self) -> int:
        """Payload bytes decoded so far."""
        return self._total

    @property
    def done(self) -> bool:
        """True once the terminating empty line of the body has been read."""
        return self._state is _State.DONE

    # -- public API -----------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Consume wire bytes; return the payload bytes they completed (maybe ``b""``)."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._feed(data)
        except S3Error as error:
            self._failed = error
            raise

    def finish(self) -> None:
        """The HTTP body ended: raise ``IncompleteBody`` unless the framing is complete."""
        if self._failed is not None:
            raise self._failed
        try:
            self._finish()
        except S3Error as error:
            self._failed = error
            raise

    # -- machinery ------------------------------------------------------------

    def _feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state is _State.DATA:
                take = min(self._remaining, end - pos)
                piece = (
                    data
                    if (pos == 0 and take == end)
                    else bytes(view[pos : pos + take])
                )
                if self._signed:
                    self._hasher.update(piece)
                out.append(piece)
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._end_of_chunk_data()
            elif state is _State.DATA_CR or state is _State.DATA_LF:
                expected = 13 if state is _State.DATA_CR else 10
                if data[pos] != expected:
                    raise InvalidRequest(
                        "aws-chunked: chunk data is not followed by CRLF."
                    )
                pos += 1
                self._state = (
                    _State.DATA_LF if state is _State.DATA_CR else _State.HEADER
                )
            elif state is _State.DONE:
                raise InvalidRequest(
                    "aws-chunked: data after the end of the chunked body."
                )
            else:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline
                if len(self._line) + (stop - pos) > MAX_LINE:
                    raise InvalidRequest(
                        "aws-chunked: chunk header or trailer line too long."
                    )
                self._line += view[pos:stop]
                if newline < 0:
                    pos = end
                    break
                pos = newline + 1
                line = bytes(self._line)
                self._line.clear()
                if line.endswith(b"\r"):
                    line = line[:-1]
                if state is _State.HEADER:
                    self._chunk_header(line)
                else:
                    self._trailer_line(line)
        return b"".join(out) if len(out) != 1 else out[0]

    def _chunk_header(self, line: bytes) -> None:
        size_field, _, extensions = line.partition(b";")
        size_field = size_field.strip(b" \t")
        if not _HEX_SIZE.fullmatch(size_field):
            raise InvalidRequest("aws-chunked: invalid chunk size.")
        size = int(size_field, 16)
        if size > self._max_chunk_size:
            raise InvalidRequest(
                f"aws-chunked: chunk of {size} bytes exceeds the {self._max_chunk_size}-byte limit."
            )
        self._chunks += 1
        if size and self._chunks > 1 and self._previous_size < self._min_chunk_size:
            # Like AWS: noticed when the next data chunk starts, and reported
            # with that chunk's number and the undersized chunk's size.
            raise InvalidChunkSizeError(
                Chunk=str(self._chunks), BadChunkSize=str(self._previous_size)
            )
        self._previous_size = size
        if self._signed:
            self._chunk_signature = self._extract_signature(extensions)
            self._hasher = hashlib.sha256()
        if (
            self._decoded_length is not None
            and self._total + size > self._decoded_length
        ):
            raise IncompleteBody(
                "The decoded body is longer than x-amz-decoded-content-length."
            )
        self._total += size
        if size:
            self._remaining = size
            self._state = _State.DATA
            return
        # The final, empty chunk.
        if self._signed:
            self._verify_chunk(EMPTY_SHA256)
        if self._decoded_length is not None and self._total != self._decoded_length:
            raise IncompleteBody(
                "The decoded body is shorter than x-amz-decoded-content-length."
            )
        self._state = _State.TRAILER

    @staticmethod
    def _extract_signature(extensions: bytes) -> str:
        found: str | None = None
        for extension in extensions.split(b";"):
            name, _, value = extension.partition(b"=")
            if name.strip(b" \t").lower() == b"chunk-signature":
                if found is not None:
                    raise SignatureDoesNotMatch(
                        "aws-chunked: repeated chunk-signature."
                    )
                found = value.strip(b" \t").decode("latin-1")
        if found is None or not _SIGNATURE.fullmatch(found):
            raise SignatureDoesNotMatch(
                "aws-chunked: missing or malformed chunk-signature."
            )
        return found

    def _end_of_chunk_data(self) -> None:
        if self._signed:
            self._verify_chunk(self._hasher.hexdigest())
        self._state = _State.DATA_CR

    def _sign(self, kind: str, digest: str) -> str:
        sts = f"{kind}{self._sts_prefix}{self._previous_signature}\n{digest}"
        return hmac.new(
            self._signing_key, sts.encode("ascii"), hashlib.sha256
        ).hexdigest()

    def _verify_chunk(self, payload_digest: str) -> None:
        expected = self._sign(
            "AWS4-HMAC-SHA256-PAYLOAD", f"{EMPTY_SHA256}\n{payload_digest}"
        )
        if not hmac.compare_digest(
            expected.encode("ascii"), self._chunk_signature.encode("ascii")
        ):
            raise SignatureDoesNotMatch("aws-chunked: chunk signature does not match.")
        self._previous_signature = expected

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            if (
                self._trailer
                and self._trailer_lines == 0
                and not self._blank_before_trailers
            ):
                # Either the end of a body without trailers, or a blank line some
                # clients put between the final chunk and the trailers: stay
                # here; finish() accepts both.
                self._blank_before_trailers = True
                return
            self._end_of_trailers()
            self._state = _State.DONE
            return
        if not self._trailer:
            raise InvalidRequest("aws-chunked: unexpected data after the final chunk.")
        if self.trailer_signature_ok:
            raise InvalidRequest("aws-chunked: trailer after x-amz-trailer-signature.")
        if not line.isascii():
            raise InvalidRequest("aws-chunked: trailer is not ASCII.")
        raw_name, sep, raw_value = line.decode("ascii").partition(":")
        name = raw_name.strip().lower()
        value = raw_value.strip()
        if not sep or not _TRAILER_NAME.fullmatch(name):
            raise InvalidRequest("aws-chunked: malformed trailer.")
        self._trailer_lines += 1
        if name == _TRAILER_SIGNATURE:
            if self._signed:
                self._verify_trailer_signature(value)
            return
        if name in self.trailers:
            raise InvalidRequest(f"aws-chunked: repeated trailer {name}.")
        if len(self.trailers) >= MAX_TRAILERS:
            raise InvalidRequest("aws-chunked: too many trailers.")
        self.trailers[name] = " ".join(value.split())

    def _canonical_trailers(self) -> str:
        return "".join(
            f"{name}:{value}\n" for name, value in sorted(self.trailers.items())
        )

    def _verify_trailer_signature(self, claimed: str) -> None:
        digest = hashlib.sha256(self._canonical_trailers().encode("ascii")).hexdigest()
        expected = self._sign("AWS4-HMAC-SHA256-TRAILER", digest)
        if not hmac.compare_digest(expected.encode("ascii"), claimed.encode("ascii")):
            raise SignatureDoesNotMatch(
                "aws-chunked: trailer signature does not match."
            )
        self._previous_signature = expected
        self.trailer_signature_ok = True

    def _end_of_trailers(self) -> None:
        if self._trailer and self._signed and not self.trailer_signature_ok:
            raise SignatureDoesNotMatch(
                "aws-chunked: trailers without x-amz-trailer-signature."
            )

    def _finish(self) -> None:
        if self._state is _State.DONE:
            return
        if self._state is _State.TRAILER and not self._line:
            # The closing empty line is optional: everything before it was
            # complete and verified.  A signed trailer must have been seen.
            if self._trailer and self._signed and not self.trailer_signature_ok:
                raise IncompleteBody(
                    "aws-chunked: body ended before x-amz-trailer-signature."
                )
            self._state = _State.DONE
            return
        raise IncompleteBody()


def decoder_for_payload_hash(
    payload_hash: str,
    *,
    signing_key: bytes,
    seed_signature: str,
    amz_date: str,
    scope: str,
    decoded_length: int | None,
    max_chunk_size: int = 16 * 1024 * 1024,
    min_chunk_size: int = MIN_CHUNK_SIZE,
) -> AwsChunkedDecoder | None:
    """The decoder the ``x-amz-content-sha256`` claim calls for, or None if not streaming."""
    if not is_streaming_payload(payload_hash):
        return None
    signed = payload_hash != STREAMING_UNSIGNED_TRAILER
    return AwsChunkedDecoder(
        signed=signed,
        trailer=payload_hash != STREAMING_PAYLOAD,
        signing_key=signing_key if signed else None,
        seed_signature=seed_signature if signed else None,
        amz_date=amz_date if signed else None,
        scope=scope if signed else None,
        decoded_length=decoded_length,
        max_chunk_size=max_chunk_size,
        min_chunk_size=min_chunk_size,
    )
