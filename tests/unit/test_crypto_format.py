"""The encrypted stream format: round trips, ranges, and every tampering failing closed."""

from __future__ import annotations

import hashlib
import os

import pytest
from twisted.internet.defer import Deferred

from s3orch.backend.interface import BackendUnavailable
from s3orch.backend.memory import MemoryStream
from s3orch.core.spool import run_here
from s3orch.crypto import format as fmt
from s3orch.crypto.format import (
    CHUNK_OVERHEAD,
    HEADER_SIZE,
    ChunkDecryptor,
    DecryptionError,
    StreamParams,
    covering,
    covering_all,
    decrypt_all,
    encrypt_all,
)
from s3orch.crypto.streams import CiphertextRejected, DecryptingStream, encrypt_spool, plan
from s3orch.payload import Payload

CHUNK = 4096
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17, 8 * CHUNK]


def params(size: int, *, dek: bytes | None = None, identity: bytes = b"object-a", part: int = 0) -> StreamParams:
    return StreamParams(dek or DEK, identity, part, size, CHUNK)


DEK = bytes(range(32))


class Sink:
    """A body consumer that keeps what it gets."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.producer: object = None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.data += data


def result_of(deferred: Deferred[object]) -> object:
    results: list[object] = []
    deferred.addBoth(results.append)
    assert results, "the deferred did not fire"
    return results[0]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_size(size: int) -> None:
    plain = os.urandom(size)
    p = params(size)
    stored = encrypt_all(p, plain)
    assert len(stored) == HEADER_SIZE + CHUNK_OVERHEAD * max(1, -(-size // CHUNK)) + size
    assert len(stored) == p.stored_size
    assert decrypt_all(p, stored) == plain
    if size >= 16:
        assert plain not in stored and plain[:16] not in stored


def test_chunk_nonces_are_base_xor_index() -> None:
    p = params(3 * CHUNK)
    stored = encrypt_all(p, os.urandom(3 * CHUNK))
    base = stored[8:20]
    for index in range(3):
        offset = p.chunk_offset(index)
        assert stored[offset : offset + 12] == fmt.chunk_nonce(base, index)


def test_feeding_in_odd_pieces_gives_the_same_plaintext() -> None:
    plain = os.urandom(3 * CHUNK + 5)
    p = params(len(plain))
    encryptor = fmt.ChunkEncryptor(p)
    stored = b"".join(encryptor.feed(plain[i : i + 1000]) for i in range(0, len(plain), 1000)) + encryptor.finish()
    decryptor = ChunkDecryptor(p, covering_all(p))
    out = b"".join(decryptor.feed(stored[i : i + 777]) for i in range(0, len(stored), 777))
    decryptor.finish()
    assert out == plain


def _fails(p: StreamParams, stored: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt_all(p, stored)


def test_flipped_byte_in_every_region_fails() -> None:
    plain = os.urandom(2 * CHUNK + 9)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    for position in (0, 9, HEADER_SIZE + 3, HEADER_SIZE + 20, p.chunk_offset(1) + 100, len(stored) - 1):
        tampered = bytearray(stored)
        tampered[position] ^= 0x01
        if 8 <= position < 20:  # the header's base nonce is informational: chunks carry theirs
            continue
        _fails(p, bytes(tampered))


def test_truncation_at_a_chunk_boundary_fails() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    _fails(p, stored[: p.chunk_offset(2)])  # the last chunk dropped whole
    _fails(p, stored[:HEADER_SIZE])
    _fails(p, stored[:-1])
    # A shorter object claiming to be complete: its last chunk was not sealed as final.
    shorter = params(2 * CHUNK)
    _fails(shorter, stored[: p.chunk_offset(2)])


def test_swapped_chunks_fail() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    c0 = stored[p.chunk_offset(0) : p.chunk_offset(1)]
    c1 = stored[p.chunk_offset(1) : p.chunk_offset(2)]
    swapped = stored[:HEADER_SIZE] + c1 + c0 + stored[p.chunk_offset(2) :]
    _fails(p, swapped)


def test_chunk_from_another_object_fails_even_under_the_same_key() -> None:
    plain = os.urandom(2 * CHUNK)
    a, b = params(len(plain), identity=b"object-a"), params(len(plain), identity=b"object-b")
    stored_a, stored_b = encrypt_all(a, plain), encrypt_all(b, plain)
    mixed = stored_b[: b.chunk_offset(1)] + stored_a[a.chunk_offset(1) :]
    _fails(b, mixed)
    # ...and another part of the same object.
    _fails(params(len(plain), part=2), encrypt_all(params(len(plain), part=1), plain))


def test_wrong_key_fails() -> None:
    plain = os.urandom(100)
    stored = encrypt_all(params(100), plain)
    _fails(params(100, dek=os.urandom(32)), stored)


def test_header_is_checked_on_full_reads() -> None:
    p = params(10)
    stored = bytearray(encrypt_all(p, b"0123456789"))
    stored[0:4] = b"XXXX"
    _fails(p, bytes(stored))


@pytest.mark.parametrize(
    "first,last",
    [(0, 0), (CHUNK - 1, CHUNK), (CHUNK - 2, 2 * CHUNK + 3), (CHUNK, 2 * CHUNK - 1), (5, 5 * CHUNK + 16)],
)
def test_ranges_across_chunk_boundaries_are_exact(first: int, last: int) -> None:
    plain = os.urandom(5 * CHUNK + 17)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    span, stored_range = plan(p, (first, last))
    assert span.first == first // CHUNK and span.last == last // CHUNK
    begin, end = stored_range if stored_range is not None else (0, len(stored) - 1)
    stream = DecryptingStream(
        MemoryStream(stored[begin : end + 1], status=206, content_range=(begin, end, len(stored)), chunk_size=999),
        p,
        (first, last),
    )
    sink = Sink()
    assert result_of(stream.deliver(sink)) is None
    assert bytes(sink.data) == plain[first : last + 1]
    assert stream.length == last - first + 1 and stream.content_range == (first, last, len(plain))


def test_a_backend_that_ignores_the_range_is_cut() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    stream = DecryptingStream(MemoryStream(stored), p, (CHUNK + 1, CHUNK + 10))
    sink = Sink()
    assert result_of(stream.deliver(sink)) is None
    assert bytes(sink.data) == plain[CHUNK + 1 : CHUNK + 11]


def test_covering_reads_only_the_chunks_touched() -> None:
    p = params(10 * CHUNK)
    span = covering(p, 3 * CHUNK + 1, 4 * CHUNK + 1)
    assert (span.first, span.last) == (3, 4)
    assert span.stored_end - span.stored_start + 1 == 2 * (CHUNK + CHUNK_OVERHEAD)


def test_tampered_stream_releases_no_byte_of_the_bad_chunk() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = bytearray(encrypt_all(p, plain))
    stored[p.chunk_offset(0) + 40] ^= 0xFF
    sink = Sink()
    failure = result_of(DecryptingStream(MemoryStream(bytes(stored), chunk_size=512), p, None).deliver(sink))
    assert failure.check(CiphertextRejected)  # type: ignore[attr-defined]
    assert bytes(sink.data) == b""


def test_truncated_stored_object_is_refused_before_the_first_byte() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    with pytest.raises(CiphertextRejected):
        DecryptingStream(MemoryStream(stored[:-100]), p, None)


def test_a_body_cut_mid_stream_fails() -> None:
    plain = os.urandom(3 * CHUNK)
    p = params(len(plain))
    stored = encrypt_all(p, plain)
    sink = Sink()
    inner = MemoryStream(stored, fail_after=p.chunk_offset(2) + 5)
    failure = result_of(DecryptingStream(inner, p, None).deliver(sink))
    assert failure.check(BackendUnavailable)  # type: ignore[attr-defined]
    assert len(sink.data) == 2 * CHUNK  # only authenticated chunks were released


def test_encrypt_spool_keeps_memory_bounded_and_hashes_the_ciphertext() -> None:
    plain = os.urandom(3 * CHUNK + 1)
    p = params(len(plain))
    payload = Payload.from_bytes(plain)
    stored_payload = result_of(Deferred.fromCoroutine(encrypt_spool(payload, p, spool_dir=None, offload=run_here)))
    assert isinstance(stored_payload, Payload)
    stored = stored_payload.reader().read()
    assert len(stored) == stored_payload.length == p.stored_size
    assert stored_payload.md5_hex == hashlib.md5(stored).hexdigest()
    assert stored_payload.sha256_hex == hashlib.sha256(stored).hexdigest()
    assert decrypt_all(p, stored) == plain
    assert hashlib.sha256(plain).hexdigest().encode() not in stored
