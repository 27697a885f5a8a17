"""aws-chunked decoding: the AWS documentation examples, tampering, truncation, trailers."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import os
import pathlib
from collections.abc import Callable

import pytest
from botocore.httpchecksum import AwsChunkedWrapper
from hypothesis import given, settings
from hypothesis import strategies as st

from s3orch.s3.checksums import ALGORITHMS, Checksum, new_checksum
from s3orch.s3.chunked import (
    MAX_LINE,
    MIN_CHUNK_SIZE,
    AwsChunkedDecoder,
    decoder_for_payload_hash,
)
from s3orch.s3.errors import (
    IncompleteBody,
    InvalidChunkSizeError,
    InvalidRequest,
    SignatureDoesNotMatch,
)
from s3orch.s3.sigv4 import (
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    derive_signing_key,
)

DOCS = json.loads(
    (pathlib.Path(__file__).parent / "vectors" / "s3-docs-examples.json").read_text()
)
STREAMING = DOCS["streaming_example"]
TRAILING = DOCS["streaming_trailer_example"]
CRT_TRAILERS = DOCS["crt_trailing_headers_example"]
KEY = derive_signing_key(DOCS["secret_key"], "20130524", "us-east-1", "s3")
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
DATA = b"a" * 66560
CHUNKS = [DATA[:65536], DATA[65536:]]


# --------------------------------------------------------------------------
# Reference construction (independent of the decoder), checked against AWS
# --------------------------------------------------------------------------


def _hmac_hex(message: str) -> str:
    return hmac.new(KEY, message.encode(), hashlib.sha256).hexdigest()


def chunk_signature(previous: str, data: bytes) -> str:
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-PAYLOAD",
            AMZ_DATE,
            SCOPE,
            previous,
            EMPTY_SHA256,
            hashlib.sha256(data).hexdigest(),
        ]
    )
    return _hmac_hex(sts)


def trailer_signature(previous: str, trailers: dict[str, str]) -> str:
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            AMZ_DATE,
            SCOPE,
            previous,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    return _hmac_hex(sts)


def build_signed(
    chunks: list[bytes],
    seed: str,
    *,
    trailers: dict[str, str] | None = None,
    blank_before_trailers: bool = False,
    size_format: str = "{:x}",
    extension: Callable[[str], str] = lambda sig: f";chunk-signature={sig}",
) -> tuple[bytes, list[str]]:
    """Frame chunks as the AWS docs describe; return (body, chunk signatures incl. trailer)."""
    body = bytearray()
    signatures: list[str] = []
    previous = seed
    for data in [*chunks, b""]:
        previous = chunk_signature(previous, data)
        signatures.append(previous)
        body += f"{size_format.format(len(data))}{extension(previous)}\r\n".encode()
        if data:
            body += data + b"\r\n"
    if trailers is None:
        body += b"\r\n"
        return bytes(body), signatures
    if blank_before_trailers:
        body += b"\r\n"
    for name, value in trailers.items():
        body += f"{name}:{value}\r\n".encode()
    previous = trailer_signature(previous, trailers)
    signatures.append(previous)
    body += f"x-amz-trailer-signature:{previous}\r\n\r\n".encode()
    return bytes(body), signatures


def signed_decoder(
    seed: str,
    *,
    trailer: bool,
    decoded_length: int | None = None,
    max_chunk_size: int = 16 << 20,
    min_chunk_size: int = MIN_CHUNK_SIZE,
) -> AwsChunkedDecoder:
    """A signed decoder; framing tests that use tiny chunks pass ``min_chunk_size=1``."""
    return AwsChunkedDecoder(
        signed=True,
        trailer=trailer,
        signing_key=KEY,
        seed_signature=seed,
        amz_date=AMZ_DATE,
        scope=SCOPE,
        decoded_length=decoded_length,
        max_chunk_size=max_chunk_size,
        min_chunk_size=min_chunk_size,
    )


def unsigned_decoder(decoded_length: int | None = None) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(
        signed=False,
        trailer=True,
        signing_key=None,
        seed_signature=None,
        amz_date=None,
        scope=None,
        decoded_length=decoded_length,
    )


def decode(decoder: AwsChunkedDecoder, body: bytes, piece: int = 1 << 20) -> bytes:
    out = b"".join(
        decoder.feed(body[i : i + piece]) for i in range(0, len(body), piece)
    )
    decoder.finish()
    return out


def docs_body() -> bytes:
    sig1, sig2, sig3 = STREAMING["chunk_signatures"]
    return (
        f"10000;chunk-signature={sig1}\r\n".encode()
        + CHUNKS[0]
        + b"\r\n"
        + f"400;chunk-signature={sig2}\r\n".encode()
        + CHUNKS[1]
        + b"\r\n"
        + f"0;chunk-signature={sig3}\r\n\r\n".encode()
    )


def docs_trailer_body() -> bytes:
    sig1, sig2, sig3 = TRAILING["chunk_signatures"]
    sig4 = trailer_signature(sig3, TRAILING["trailers"])
    return (
        f"10000;chunk-signature={sig1}\r\n".encode()
        + CHUNKS[0]
        + b"\r\n"
        + f"400;chunk-signature={sig2}\r\n".encode()
        + CHUNKS[1]
        + b"\r\n"
        + f"0;chunk-signature={sig3}\r\n".encode()
        + b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
        + f"x-amz-trailer-signature:{sig4}\r\n\r\n".encode()
    )


def test_reference_construction_matches_the_aws_examples() -> None:
    body, signatures = build_signed(CHUNKS, STREAMING["seed_signature"])
    assert signatures == STREAMING["chunk_signatures"]
    assert body == docs_body()
    assert len(body) == STREAMING["content_length"]

    body, signatures = build_signed(
        CHUNKS, TRAILING["seed_signature"], trailers=TRAILING["trailers"]
    )
    assert signatures[:3] == TRAILING["chunk_signatures"]
    assert body == docs_trailer_body()
    assert len(body) == TRAILING["content_length"]
    canonical = "".join(f"{k}:{v}\n" for k, v in TRAILING["trailers"].items())
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == TRAILING["trailer_payload_sha256"]
    )

    # The trailer string to sign, checked against the AWS CRT's own vector.
    canonical = "".join(
        f"{k}:{v}\n" for k, v in sorted(CRT_TRAILERS["trailers"].items())
    )
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == CRT_TRAILERS["canonical_trailers_sha256"]
    )
    assert (
        trailer_signature(CRT_TRAILERS["previous_signature"], CRT_TRAILERS["trailers"])
        == CRT_TRAILERS["signature"]
    )


# --------------------------------------------------------------------------
# STREAMING-AWS4-HMAC-SHA256-PAYLOAD
# --------------------------------------------------------------------------


def test_docs_example_decodes_and_verifies() -> None:
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, decoded_length=66560
    )
    assert decode(decoder, docs_body(), piece=4096) == DATA
    assert decoder.done
    assert decoder.decoded_total == 66560
    assert decoder.trailers == {}


def test_docs_example_byte_at_a_time() -> None:
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, decoded_length=66560
    )
    assert decode(decoder, docs_body(), piece=1) == DATA


@pytest.mark.parametrize("offset", [88, 100, 65623, 65712, 65712 + 1023])
def test_tampered_chunk_data_fails(offset: int) -> None:
    body = bytearray(docs_body())
    body[offset] ^= 0x01
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, decoded_length=66560
    )
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, bytes(body), piece=8192)


def test_tampered_chunk_signature_fails() -> None:
    sig = STREAMING["chunk_signatures"][1]
    body = docs_body().replace(sig.encode(), ("0" * 64).encode())
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, body)


def test_wrong_seed_signature_fails() -> None:
    decoder = signed_decoder("1" * 64, trailer=False)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, docs_body())


def test_reordered_chunks_fail() -> None:
    # Same chunks, each validly signed in its own chain, spliced in another order.
    body_a, _ = build_signed([b"x" * 10, b"y" * 10], STREAMING["seed_signature"])
    body_b, _ = build_signed([b"y" * 10, b"x" * 10], STREAMING["seed_signature"])
    spliced = (
        body_a[: body_a.index(b"\r\n", 80) + 2 + 12]
        + body_b[body_b.index(b"\r\n", 80) + 2 + 12 :]
    )
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False, min_chunk_size=1)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, spliced)


def test_dropped_final_chunk_is_incomplete() -> None:
    body = docs_body()
    truncated = body[: body.rindex(b"\r\n0;chunk-signature") + 2]
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    assert decoder.feed(truncated) == DATA  # bytes flow, verified chunk by chunk
    with pytest.raises(IncompleteBody):
        decoder.finish()


@pytest.mark.parametrize("cut", [0, 1, 40, 90, 1000, 65536 + 85, 66000, -90, -10])
def test_truncated_body_is_incomplete(cut: int) -> None:
    body = docs_body()
    end = len(body) - 2  # just before the closing CRLF
    truncated = body[: cut if cut >= 0 else end + cut]
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    decoder.feed(truncated)
    with pytest.raises(IncompleteBody):
        decoder.finish()


def test_missing_closing_crlf_after_final_chunk_is_tolerated() -> None:
    body = docs_body()[:-2]
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, decoded_length=66560
    )
    assert decode(decoder, body) == DATA


@pytest.mark.parametrize("declared", [0, 65535, 66559, 66561, 1 << 40])
def test_wrong_decoded_length_is_incomplete(declared: int) -> None:
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, decoded_length=declared
    )
    with pytest.raises(IncompleteBody):
        decode(decoder, docs_body())


def test_chunk_bigger_than_limit_is_refused_before_its_data() -> None:
    decoder = signed_decoder(
        STREAMING["seed_signature"], trailer=False, max_chunk_size=65535
    )
    header = f"10000;chunk-signature={STREAMING['chunk_signatures'][0]}\r\n".encode()
    with pytest.raises(InvalidRequest):
        decoder.feed(header)


@pytest.mark.parametrize(
    "header",
    [
        b"zz;chunk-signature=" + b"0" * 64,
        b"0x10;chunk-signature=" + b"0" * 64,
        b"+10;chunk-signature=" + b"0" * 64,
        b"-1;chunk-signature=" + b"0" * 64,
        b";chunk-signature=" + b"0" * 64,
        b"1_0;chunk-signature=" + b"0" * 64,
        b"11111111111111111;chunk-signature=" + b"0" * 64,
    ],
)
def test_bad_chunk_size_is_invalid_request(header: bytes) -> None:
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(InvalidRequest):
        decoder.feed(header + b"\r\n")


@pytest.mark.parametrize(
    "extension", [b"", b";chunk-signature=", b";chunk-signature=xyz", b";other=1"]
)
def test_missing_or_malformed_chunk_signature(extension: bytes) -> None:
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(SignatureDoesNotMatch):
        decoder.feed(b"5" + extension + b"\r\n")


def test_missing_crlf_after_chunk_data_is_invalid_request() -> None:
    body = docs_body().replace(CHUNKS[1] + b"\r\n", CHUNKS[1] + b"\n\n")
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(InvalidRequest):
        decode(decoder, body)


def test_overlong_header_line_is_refused_with_bounded_buffer() -> None:
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    decoder.feed(b"1" * (MAX_LINE // 2))
    with pytest.raises(InvalidRequest):
        decoder.feed(b"1" * (MAX_LINE // 2 + 1))


def test_data_after_the_end_is_invalid_request() -> None:
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    decoder.feed(docs_body())
    with pytest.raises(InvalidRequest):
        decoder.feed(b"x")


def test_trailers_without_trailer_mode_are_invalid_request() -> None:
    body = docs_body()[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(InvalidRequest):
        decode(decoder, body)


def test_errors_are_sticky() -> None:
    decoder = signed_decoder("1" * 64, trailer=False)
    body = docs_body()
    with pytest.raises(SignatureDoesNotMatch):
        decoder.feed(body)
    with pytest.raises(SignatureDoesNotMatch):
        decoder.feed(b"")
    with pytest.raises(SignatureDoesNotMatch):
        decoder.finish()


def test_lenient_framing_hex_case_extensions_and_bare_lf() -> None:
    seed = STREAMING["seed_signature"]
    chunks = [b"z" * 42, b"q" * 7]
    body, _ = build_signed(
        chunks,
        seed,
        size_format="{:X}",
        extension=lambda sig: f" ; ext=1;chunk-signature={sig} ;flag",
    )
    decoder = signed_decoder(seed, trailer=False, decoded_length=49, min_chunk_size=1)
    assert decode(decoder, body) == b"".join(chunks)
    # Bare LF after a chunk-header line is accepted as well.
    bare = body.replace(b"flag\r\n", b"flag\n")
    assert bare != body
    assert decode(signed_decoder(seed, trailer=False, min_chunk_size=1), bare) == b"".join(chunks)


def test_payload_streams_out_without_waiting_for_the_chunk_end() -> None:
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB in one chunk
    body, _ = build_signed([data], STREAMING["seed_signature"])
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    header_end = body.index(b"\r\n") + 2
    assert decoder.feed(body[:header_end]) == b""
    outputs = []
    for start in range(header_end, header_end + len(data), 65536):
        piece = decoder.feed(body[start : start + 65536])
        assert len(piece) == 65536  # emitted as it arrives, never held back
        outputs.append(piece)
    decoder.feed(body[header_end + len(data) :])
    decoder.finish()
    assert b"".join(outputs) == data


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    trailer=st.booleans(),
)
def test_any_split_decodes_like_one_feed(
    chunks: list[bytes], cuts: list[int], trailer: bool
) -> None:
    seed = STREAMING["seed_signature"]
    trailers = (
        {"x-amz-checksum-crc32c": _b64("crc32c", b"".join(chunks))} if trailer else None
    )
    body, _ = build_signed(chunks, seed, trailers=trailers)
    points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    decoder = signed_decoder(
        seed, trailer=trailer, decoded_length=sum(map(len, chunks)), min_chunk_size=1
    )
    out = b"".join(decoder.feed(body[a:b]) for a, b in itertools.pairwise(points))
    decoder.finish()
    assert out == b"".join(chunks)
    assert decoder.trailers == (trailers or {})
    assert decoder.trailer_signature_ok == trailer


# --------------------------------------------------------------------------
# STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
# --------------------------------------------------------------------------


def _b64(algorithm: str, data: bytes) -> str:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return checksum.b64digest()


def test_docs_trailer_example_decodes_and_verifies() -> None:
    decoder = signed_decoder(
        TRAILING["seed_signature"], trailer=True, decoded_length=66560
    )
    assert decode(decoder, docs_trailer_body(), piece=1000) == DATA
    assert decoder.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}
    assert decoder.trailer_signature_ok
    assert decoder.done


def test_docs_trailer_example_byte_at_a_time() -> None:
    decoder = signed_decoder(
        TRAILING["seed_signature"], trailer=True, decoded_length=66560
    )
    assert decode(decoder, docs_trailer_body(), piece=1) == DATA
    assert decoder.trailer_signature_ok


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signed_trailer_with_each_algorithm(algorithm: str) -> None:
    data = bytes(range(251)) * 300
    chunks = [data[:32768], data[32768:65536], data[65536:]]
    name = f"x-amz-checksum-{algorithm}"
    body, _ = build_signed(
        chunks, TRAILING["seed_signature"], trailers={name: _b64(algorithm, data)}
    )
    decoder = signed_decoder(
        TRAILING["seed_signature"], trailer=True, decoded_length=len(data)
    )
    assert decode(decoder, body, piece=7000) == data
    assert decoder.trailers == {name: _b64(algorithm, data)}
    assert decoder.trailer_signature_ok


def test_signed_trailer_with_two_trailers_is_canonicalised_sorted() -> None:
    trailers = {
        "x-amz-checksum-sha256": _b64("sha256", b"abc"),
        "x-amz-checksum-crc32": _b64("crc32", b"abc"),
    }
    body, _ = build_signed([b"abc"], TRAILING["seed_signature"], trailers=trailers)
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    assert decode(decoder, body) == b"abc"
    assert decoder.trailers == trailers


def test_blank_line_before_trailers_is_tolerated() -> None:
    body, _ = build_signed(
        CHUNKS,
        TRAILING["seed_signature"],
        trailers=TRAILING["trailers"],
        blank_before_trailers=True,
    )
    decoder = signed_decoder(
        TRAILING["seed_signature"], trailer=True, decoded_length=66560
    )
    assert decode(decoder, body) == DATA
    assert decoder.trailer_signature_ok


def test_tampered_trailer_value_fails() -> None:
    body = docs_trailer_body().replace(b"sOO8/Q==", b"AAAAAA==")
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, body)


def test_tampered_trailer_signature_fails() -> None:
    body = docs_trailer_body()
    sig = body[body.rindex(b"x-amz-trailer-signature:") + 24 :][:64]
    body = body.replace(sig, b"0" * 64)
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, body)


def test_trailer_without_signature_fails() -> None:
    body = docs_trailer_body()
    unsigned = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, unsigned)


def test_body_ending_before_trailer_signature_is_incomplete() -> None:
    body = docs_trailer_body()
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    decoder.feed(body[: body.index(b"x-amz-trailer-signature")])
    with pytest.raises(IncompleteBody):
        decoder.finish()


def test_trailer_after_signature_is_invalid_request() -> None:
    body = docs_trailer_body()[:-2] + b"x-amz-meta-late:1\r\n\r\n"
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    with pytest.raises(InvalidRequest):
        decode(decoder, body)


@pytest.mark.parametrize(
    "line", [b"no-colon-here", b": empty-name", b"bad name:1", b"x-amz-\xffcrc:1"]
)
def test_malformed_trailer_line_is_invalid_request(line: bytes) -> None:
    body = docs_trailer_body()
    bad = body[: body.index(b"x-amz-checksum-crc32c")] + line + b"\r\n"
    decoder = signed_decoder(TRAILING["seed_signature"], trailer=True)
    with pytest.raises(InvalidRequest):
        decoder.feed(bad)


# --------------------------------------------------------------------------
# STREAMING-UNSIGNED-PAYLOAD-TRAILER (botocore's own encoder)
# --------------------------------------------------------------------------


def _checksum_factory(algorithm: str) -> Callable[[], Checksum]:
    return lambda: new_checksum(algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_botocore_unsigned_trailer_with_each_algorithm(algorithm: str) -> None:
    data = bytes(range(256)) * 64 + b"tail"
    name = f"x-amz-checksum-{algorithm}"
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=_checksum_factory(algorithm),
        checksum_name=name,
        chunk_size=MIN_CHUNK_SIZE,
    )
    body = wrapper.read()
    assert body.count(b"\r\n") > 8  # really chunked
    decoder = unsigned_decoder(decoded_length=len(data))
    assert decode(decoder, body, piece=333) == data
    assert decoder.trailers == {name: _b64(algorithm, data)}
    assert not decoder.trailer_signature_ok


def test_unsigned_trailer_empty_body() -> None:
    body = AwsChunkedWrapper(
        io.BytesIO(b""),
        checksum_cls=_checksum_factory("crc32"),
        checksum_name="x-amz-checksum-crc32",
    ).read()
    decoder = unsigned_decoder(decoded_length=0)
    assert decode(decoder, body) == b""
    assert decoder.trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


def test_unsigned_chunks_ignore_extensions_and_truncation_is_incomplete() -> None:
    body = b"3;chunk-signature=whatever\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"
    assert decode(unsigned_decoder(decoded_length=3), body) == b"abc"
    decoder = unsigned_decoder()
    decoder.feed(body[:20])
    with pytest.raises(IncompleteBody):
        decoder.finish()


def test_unsigned_trailer_too_many_trailers() -> None:
    lines = b"".join(b"x-amz-meta-%d:1\r\n" % n for n in range(17))
    decoder = unsigned_decoder()
    with pytest.raises(InvalidRequest):
        decoder.feed(b"0\r\n" + lines)


# --------------------------------------------------------------------------
# Choosing the decoder
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (STREAMING_PAYLOAD, (True, False)),
        (STREAMING_PAYLOAD_TRAILER, (True, True)),
        (STREAMING_UNSIGNED_TRAILER, (False, True)),
        (UNSIGNED_PAYLOAD, None),
        (EMPTY_SHA256, None),
    ],
)
def test_decoder_for_payload_hash(
    claim: str, expected: tuple[bool, bool] | None
) -> None:
    decoder = decoder_for_payload_hash(
        claim,
        signing_key=KEY,
        seed_signature="0" * 64,
        amz_date=AMZ_DATE,
        scope=SCOPE,
        decoded_length=None,
    )
    if expected is None:
        assert decoder is None
    else:
        assert decoder is not None
        assert (decoder._signed, decoder._trailer) == expected


def test_signed_decoder_requires_signing_material() -> None:
    with pytest.raises(ValueError):
        AwsChunkedDecoder(
            signed=True,
            trailer=False,
            signing_key=None,
            seed_signature=None,
            amz_date=None,
            scope=None,
            decoded_length=None,
        )


# --------------------------------------------------------------------------
# AWS's 8 KiB minimum for every chunk but the last one carrying data
# --------------------------------------------------------------------------


def test_small_last_chunk_is_accepted() -> None:
    chunks = [b"a" * MIN_CHUNK_SIZE, b"b" * 5]
    body, _ = build_signed(chunks, STREAMING["seed_signature"])
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False, decoded_length=MIN_CHUNK_SIZE + 5)
    assert decode(decoder, body) == b"".join(chunks)
    one, _ = build_signed([b"tiny"], STREAMING["seed_signature"])
    assert decode(signed_decoder(STREAMING["seed_signature"], trailer=False), one) == b"tiny"


@pytest.mark.parametrize("sizes", [[3, 2], [MIN_CHUNK_SIZE - 1, MIN_CHUNK_SIZE], [MIN_CHUNK_SIZE, 100, 100]])
def test_chunk_under_8_kib_before_another_is_invalid_chunk_size(sizes: list[int]) -> None:
    """AWS: InvalidChunkSizeError (400), Chunk = the next chunk's number, BadChunkSize = the small one."""
    chunks = [b"x" * size for size in sizes]
    body, _ = build_signed(chunks, STREAMING["seed_signature"])
    decoder = signed_decoder(STREAMING["seed_signature"], trailer=False)
    with pytest.raises(InvalidChunkSizeError) as caught:
        decode(decoder, body, piece=997)
    bad = next(n for n, size in enumerate(sizes) if size < MIN_CHUNK_SIZE)
    assert caught.value.status == 400
    assert caught.value.fields == {"Chunk": str(bad + 2), "BadChunkSize": str(sizes[bad])}
    # Nothing after the refusal is accepted.
    with pytest.raises(InvalidChunkSizeError):
        decoder.finish()


def test_unsigned_variant_has_the_same_minimum() -> None:
    body = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"
    with pytest.raises(InvalidChunkSizeError) as caught:
        decode(unsigned_decoder(), body)
    assert caught.value.fields == {"Chunk": "2", "BadChunkSize": "5"}
    big = b"%x\r\n" % MIN_CHUNK_SIZE + b"h" * MIN_CHUNK_SIZE + b"\r\n5\r\nworld\r\n0\r\n\r\n"
    assert decode(unsigned_decoder(decoded_length=MIN_CHUNK_SIZE + 5), big) == b"h" * MIN_CHUNK_SIZE + b"world"


def test_botocore_default_chunking_passes_the_minimum() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    body = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=_checksum_factory("crc32"),
        checksum_name="x-amz-checksum-crc32",
    ).read()
    assert decode(unsigned_decoder(decoded_length=len(data)), body, piece=65536) == data
