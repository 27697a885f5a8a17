"""The stored format of an encrypted extent: chunked AES-256-GCM under a per-object data key.

One extent (a whole PUT object, or one part of a multipart object) is one stream::

    header (32 bytes) | chunk 0 | chunk 1 | ... | chunk n-1

* **header**: ``b"S3OE"``, version (1), log2 of the chunk size, two zero bytes, the random
  12-byte base nonce, the extent's plaintext length (8 bytes, big-endian), four zero bytes.
  It lets an operator (or a recovery tool) recognise and size the stream without the database;
  reads take every parameter from the database row and only check the header on full reads.
* **chunk i**: its 12-byte nonce (base nonce XOR ``i``), the ciphertext of ``chunk_size``
  plaintext bytes (fewer in the last chunk), the 16-byte GCM tag: 28 bytes of overhead each.
  An empty extent still has one (empty) chunk, so cutting a stream down to its header fails.
* **authenticated data** of chunk i binds the object's identity (random bytes the row keeps and
  copies/replication/drain moves keep too), the part number, the extent's plaintext length, the
  chunk size, ``i`` and whether ``i`` is the last chunk.  So a chunk moved to another position
  or another object, a dropped tail, a stream cut at a chunk boundary or a header edited to a
  different length all fail authentication: no plaintext byte of them is ever released.

A chunk is decrypted whole before any of its bytes leave :class:`ChunkDecryptor`, so a reader
only ever sees authenticated plaintext.  This module is pure computation (no I/O, no Twisted).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"S3OE"
VERSION = 1
HEADER_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
CHUNK_OVERHEAD = NONCE_SIZE + TAG_SIZE
DEK_SIZE = 32
DEFAULT_CHUNK_SIZE = 64 * 1024
_AAD_PREFIX = b"s3orch-enc-v1"
_HEADER = struct.Struct(">4sBBxx12sQxxxx")
assert _HEADER.size == HEADER_SIZE


class DecryptionError(Exception):
    """The ciphertext is not what was written under this key: tampered, truncated,
    reordered, from another object, or the key is wrong.  Never yields plaintext."""


class NotEncrypted(DecryptionError):
    """The stored bytes do not begin with this format's header at all: the row says
    encrypted, the bytes say otherwise (``s3o_encryption_flag_mismatch_total``)."""


def new_dek() -> bytes:
    """A fresh random 256-bit data key (one per object)."""
    return os.urandom(DEK_SIZE)


def new_identity() -> bytes:
    """A fresh random object identity for the authenticated data (kept in the row)."""
    return os.urandom(16)


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """Chunks of an extent of ``plaintext_size`` bytes (at least one)."""
    return max(1, -(-plaintext_size // chunk_size))


def ciphertext_size(plaintext_size: int, chunk_size: int) -> int:
    """Stored bytes of an extent of ``plaintext_size`` bytes."""
    return HEADER_SIZE + CHUNK_OVERHEAD * chunk_count(plaintext_size, chunk_size) + plaintext_size


def plaintext_size_of(stored_size: int, chunk_size: int) -> int:
    """The plaintext size of an extent stored in ``stored_size`` bytes (the inverse of
    :func:`ciphertext_size`, which is strictly increasing): what a part row's stored size means
    to a client.  Raises ValueError for a size no extent can have."""
    body = stored_size - HEADER_SIZE
    if body < CHUNK_OVERHEAD:
        raise ValueError(f"{stored_size} bytes cannot hold an encrypted extent")
    chunks = -(-body // (chunk_size + CHUNK_OVERHEAD))
    plain = body - CHUNK_OVERHEAD * chunks
    if ciphertext_size(plain, chunk_size) != stored_size:
        raise ValueError(f"{stored_size} bytes cannot hold an encrypted extent")
    return plain


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size <= 0 or chunk_size & (chunk_size - 1):
        raise ValueError("chunk_size must be a power of two")


@dataclass(frozen=True)
class StreamParams:
    """What both ends of one extent's stream agree on (all from the database row)."""

    dek: bytes
    identity: bytes  # the object's random identity
    part_number: int  # 0 for a single-extent object
    plaintext_size: int  # of this extent
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        _check_chunk_size(self.chunk_size)
        if len(self.dek) != DEK_SIZE:
            raise ValueError("a data key has 32 bytes")

    @property
    def chunks(self) -> int:
        return chunk_count(self.plaintext_size, self.chunk_size)

    @property
    def stored_size(self) -> int:
        return ciphertext_size(self.plaintext_size, self.chunk_size)

    def chunk_plain_length(self, index: int) -> int:
        """Plaintext bytes in chunk ``index``."""
        if index == self.chunks - 1:
            return self.plaintext_size - index * self.chunk_size
        return self.chunk_size

    def chunk_offset(self, index: int) -> int:
        """Where chunk ``index`` starts in the stored stream."""
        return HEADER_SIZE + index * (self.chunk_size + CHUNK_OVERHEAD)

    def aad(self, index: int) -> bytes:
        final = 1 if index == self.chunks - 1 else 0
        return b"".join(
            (
                _AAD_PREFIX,
                bytes((len(self.identity),)),
                self.identity,
                struct.pack(">IQIQB", self.part_number, self.plaintext_size, self.chunk_size, index, final),
            )
        )


def chunk_nonce(base_nonce: bytes, index: int) -> bytes:
    """The nonce of chunk ``index``: the base nonce XOR the index (big-endian)."""
    value = int.from_bytes(base_nonce, "big") ^ index
    return value.to_bytes(NONCE_SIZE, "big")


def encode_header(params: StreamParams, base_nonce: bytes) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, params.chunk_size.bit_length() - 1, base_nonce, params.plaintext_size)


def check_header(params: StreamParams, header: bytes) -> None:
    """Raise DecryptionError unless ``header`` describes the stream ``params`` expects."""
    if len(header) != HEADER_SIZE:
        raise DecryptionError("truncated header")
    magic, version, log2, _, length = _HEADER.unpack(header)
    if magic != MAGIC or version != VERSION:
        raise NotEncrypted("not an encrypted stream of this format")
    if 1 << log2 != params.chunk_size or length != params.plaintext_size:
        raise DecryptionError("header does not match the stored object")


@dataclass(frozen=True)
class ChunkSpan:
    """The chunks covering an inclusive plaintext range of one extent, and where they are stored."""

    first: int
    last: int
    stored_start: int  # inclusive
    stored_end: int  # inclusive
    skip: int  # plaintext bytes of chunk ``first`` before the range


def covering(params: StreamParams, start: int, end: int) -> ChunkSpan:
    """The chunks of plaintext bytes ``start``..``end`` (inclusive, within the extent).

    A range from byte 0 also reads the header (checked on the way)."""
    if not 0 <= start <= end < params.plaintext_size:
        raise ValueError("range outside the extent")
    first, last = start // params.chunk_size, end // params.chunk_size
    stored_start = 0 if first == 0 else params.chunk_offset(first)
    stored_end = params.chunk_offset(last) + CHUNK_OVERHEAD + params.chunk_plain_length(last) - 1
    return ChunkSpan(first, last, stored_start, stored_end, start - first * params.chunk_size)


class ChunkEncryptor:
    """Plaintext in, stored bytes out, one chunk at a time (bounded memory).

    Exactly ``params.plaintext_size`` bytes must be fed; :meth:`finish` emits the last chunk.
    """

    def __init__(self, params: StreamParams, base_nonce: bytes | None = None) -> None:
        self.params = params
        self._base = base_nonce if base_nonce is not None else os.urandom(NONCE_SIZE)
        self._aes = AESGCM(params.dek)
        self._buffer = bytearray()
        self._index = 0
        self._fed = 0
        self._started = False

    def _seal(self, plain: bytes) -> bytes:
        nonce = chunk_nonce(self._base, self._index)
        sealed = nonce + self._aes.encrypt(nonce, plain, self.params.aad(self._index))
        self._index += 1
        return sealed

    def feed(self, data: bytes) -> bytes:
        """Encrypt what completes chunks; the rest waits for more (or :meth:`finish`)."""
        self._fed += len(data)
        if self._fed > self.params.plaintext_size:
            raise ValueError("more plaintext than announced")
        out = []
        if not self._started:
            self._started = True
            out.append(encode_header(self.params, self._base))
        self._buffer += data
        size = self.params.chunk_size
        # Keep the last full chunk back until we know whether it is the final one.
        while len(self._buffer) > size or (
            len(self._buffer) == size and self._index < self.params.chunks - 1
        ):
            out.append(self._seal(bytes(self._buffer[:size])))
            del self._buffer[:size]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._fed != self.params.plaintext_size:
            raise ValueError(f"fed {self._fed} of {self.params.plaintext_size} plaintext bytes")
        out = b"" if self._started else encode_header(self.params, self._base)
        self._started = True
        while self._index < self.params.chunks:
            size = min(self.params.chunk_size, len(self._buffer))
            out += self._seal(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return out


class ChunkDecryptor:
    """Stored bytes of chunks ``span.first``..``span.last`` in, plaintext out.

    Releases a chunk's bytes only once its tag verified; :meth:`finish` raises when the
    stream ended before the last chunk.  With ``first == 0`` and the header included
    (``span.stored_start == 0``), the header is checked too.
    """

    def __init__(self, params: StreamParams, span: ChunkSpan) -> None:
        self.params = params
        self._aes = AESGCM(params.dek)
        self._index = span.first
        self._last = span.last
        self._header_left = HEADER_SIZE if span.stored_start == 0 else 0
        self._buffer = bytearray()

    @property
    def done(self) -> bool:
        """Every wanted chunk was authenticated."""
        return self._index > self._last

    def _next_stored_length(self) -> int:
        if self._header_left:
            return HEADER_SIZE
        return CHUNK_OVERHEAD + self.params.chunk_plain_length(self._index)

    def feed(self, data: bytes) -> bytes:
        if self.done:
            if data:
                raise DecryptionError("bytes after the last chunk")
            return b""
        self._buffer += data
        out = []
        while not self.done:
            need = self._next_stored_length()
            if len(self._buffer) < need:
                break
            piece = bytes(self._buffer[:need])
            del self._buffer[:need]
            if self._header_left:
                check_header(self.params, piece)
                self._header_left = 0
                continue
            out.append(self._open(piece))
        if self._buffer and self._index > self._last:  # (not self.done: mypy narrows it)
            raise DecryptionError("bytes after the last chunk")
        return b"".join(out)

    def _open(self, sealed: bytes) -> bytes:
        nonce, body = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
        try:
            plain = self._aes.decrypt(nonce, body, self.params.aad(self._index))
        except InvalidTag:
            raise DecryptionError(f"chunk {self._index} failed authentication") from None
        self._index += 1
        return plain

    def finish(self) -> None:
        if not self.done:
            raise DecryptionError(f"stream ended before chunk {self._index} was complete")


def decrypt_all(params: StreamParams, stored: bytes) -> bytes:
    """The plaintext of a whole stored extent held in memory (tests, small documents)."""
    decryptor = ChunkDecryptor(params, covering_all(params))
    out = decryptor.feed(stored)
    decryptor.finish()
    return out


def covering_all(params: StreamParams) -> ChunkSpan:
    """The span of every chunk, header included (an empty extent has one empty chunk)."""
    last = params.chunks - 1
    end = params.chunk_offset(last) + CHUNK_OVERHEAD + params.chunk_plain_length(last) - 1
    return ChunkSpan(0, last, 0, end, 0)


def encrypt_all(params: StreamParams, plain: bytes) -> bytes:
    """The stored form of ``plain`` (tests, small documents)."""
    encryptor = ChunkEncryptor(params)
    return encryptor.feed(plain) + encryptor.finish()
