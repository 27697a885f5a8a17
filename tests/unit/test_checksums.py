"""S3 additional checksums: known vectors, incremental updates, header parsing."""

from __future__ import annotations

import base64

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3 import checksums
from s3orch.s3.checksums import ALGORITHMS, new_checksum, parse_checksum_headers
from s3orch.s3.errors import InvalidRequest

# Check values from the CRC catalogue ("123456789") and FIPS 180 ("abc").
CHECK_VALUES = {
    "crc32": (b"123456789", "cbf43926"),
    "crc32c": (b"123456789", "e3069283"),
    "crc64nvme": (b"123456789", "ae8b14860a799888"),
    "sha1": (b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
    "sha256": (
        b"abc",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
}


def digest_of(algorithm: str, data: bytes) -> bytes:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return checksum.digest()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_check_value(algorithm: str) -> None:
    data, expected = CHECK_VALUES[algorithm]
    assert digest_of(algorithm, data).hex() == expected


@pytest.mark.parametrize(
    ("algorithm", "b64"),
    [
        # Empty input, as S3 reports it for a zero-byte object.
        ("crc32", "AAAAAA=="),
        ("crc32c", "AAAAAA=="),
        ("crc64nvme", "AAAAAAAAAAA="),
        ("sha1", "2jmj7l5rSw0yVb/vlWAYkK/YBwk="),
        ("sha256", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
    ],
)
def test_empty_input_b64(algorithm: str, b64: str) -> None:
    assert new_checksum(algorithm).b64digest() == b64


def test_aws_trailer_example_crc32c() -> None:
    # AWS "sigv4-streaming-trailers" example: 65 KiB of "a" has CRC32C sOO8/Q==.
    checksum = new_checksum("crc32c")
    checksum.update(b"a" * 66560)
    assert checksum.b64digest() == "sOO8/Q=="


def test_pure_python_crc64_matches_selected_implementation() -> None:
    data = bytes(range(256)) * 9
    assert checksums._crc64nvme_pure(data) == checksums.crc64nvme(data, 0)
    # Incremental form: continuing from a previous value equals one pass.
    assert checksums._crc64nvme_pure(
        data[100:], checksums._crc64nvme_pure(data[:100])
    ) == (checksums._crc64nvme_pure(data))


# Not combined with parametrize: pytest-twisted's wrapper breaks that pairing.
@given(st.binary(max_size=300), st.data())
def test_incremental_equals_one_shot(data: bytes, draw: st.DataObject) -> None:
    split = draw.draw(st.integers(min_value=0, max_value=len(data)))
    for algorithm in ALGORITHMS:
        checksum = new_checksum(algorithm)
        checksum.update(data[:split])
        checksum.update(memoryview(data)[split:])
        assert checksum.digest() == digest_of(algorithm, data)
        assert len(checksum.digest()) == checksum.digest_size


@given(st.binary(max_size=500))
def test_matches_botocore(data: bytes) -> None:
    pairs = (
        ("crc32", Crc32Checksum),
        ("sha1", Sha1Checksum),
        ("sha256", Sha256Checksum),
    )
    for ours, theirs in pairs:
        reference = theirs()
        reference.update(data)
        checksum = new_checksum(ours)
        checksum.update(data)
        assert checksum.b64digest() == reference.b64digest()


def test_algorithm_name_is_case_insensitive() -> None:
    checksum = new_checksum("CRC32C")
    assert checksum.algorithm == "crc32c"


def test_unknown_algorithm_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        new_checksum("md5")


def test_parse_checksum_headers_finds_the_one_header() -> None:
    value = base64.b64encode(digest_of("crc32", b"x")).decode()
    headers = {"x-amz-checksum-crc32": [value], "content-length": ["1"]}
    assert parse_checksum_headers(headers) == ("crc32", value)
    # Plain str values are accepted too.
    assert parse_checksum_headers({"x-amz-checksum-crc32": value}) == ("crc32", value)


def test_parse_checksum_headers_none_when_absent() -> None:
    assert parse_checksum_headers({"content-md5": ["x"]}) is None


def test_parse_checksum_headers_rejects_two_algorithms() -> None:
    headers = {
        "x-amz-checksum-crc32": ["AAAAAA=="],
        "x-amz-checksum-crc32c": ["AAAAAA=="],
    }
    with pytest.raises(InvalidRequest):
        parse_checksum_headers(headers)


@pytest.mark.parametrize(
    "value",
    ["not base64!", "AAAA", "AAAAAAAAAAA=", ""],  # bad base64, 3 bytes, 8 bytes, empty
)
def test_parse_checksum_headers_rejects_bad_values(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_checksum_headers({"x-amz-checksum-crc32": [value]})
