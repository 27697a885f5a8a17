"""The S3 additional checksums (``x-amz-checksum-*``), computed incrementally.

Current AWS SDKs send one of these with every upload (often as an
``aws-chunked`` trailer), so the gateway must compute the same value as
bytes stream through and compare.  Digests are the big-endian bytes of the
CRC (or the hash), base64-encoded, exactly as S3 puts them in headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import zlib
from collections.abc import Callable, Mapping, Sequence

import crc32c as _crc32c_module

from s3orch.s3.errors import InvalidRequest

__all__ = [
    "ALGORITHMS",
    "Checksum",
    "crc64nvme",
    "new_checksum",
    "parse_checksum_headers",
]

ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256", "crc64nvme")

_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32, "crc64nvme": 8}

# CRC-64/NVME: reflected, polynomial 0xAD93D23594C93659, init and xorout all ones.
_CRC64_REFLECTED_POLY = 0x9A6C9329AC4BC9B5
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_REFLECTED_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def _crc64nvme_pure(data: bytes | memoryview, crc: int = 0) -> int:
    """Table-driven CRC-64/NVME; slow (pure Python), used only without awscrt."""
    table = _CRC64_TABLE
    value = crc ^ _MASK64
    for byte in bytes(data):
        value = table[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value ^ _MASK64


def _load_crc64() -> Callable[[bytes | memoryview, int], int]:
    try:
        crt_checksums = importlib.import_module("awscrt.checksums")
    except ImportError:
        return _crc64nvme_pure
    if not hasattr(crt_checksums, "crc64nvme"):  # awscrt < 0.23.4
        return _crc64nvme_pure

    def crt(data: bytes | memoryview, crc: int = 0) -> int:
        return int(crt_checksums.crc64nvme(bytes(data), crc)) & _MASK64

    return crt


#: ``crc64nvme(data, previous_crc=0) -> int``: awscrt's C implementation when installed.
crc64nvme: Callable[[bytes | memoryview, int], int] = _load_crc64()


class Checksum:
    """One running checksum; ``update`` as bytes arrive, then ``b64digest``."""

    algorithm: str
    digest_size: int

    def update(self, data: bytes | memoryview) -> None:
        """Add bytes to the running checksum."""
        raise NotImplementedError

    def digest(self) -> bytes:
        """Big-endian digest bytes, as S3 base64-encodes them."""
        raise NotImplementedError

    def b64digest(self) -> str:
        """The value S3 puts in ``x-amz-checksum-<algorithm>``."""
        return base64.b64encode(self.digest()).decode("ascii")


class _Crc(Checksum):
    def __init__(
        self,
        algorithm: str,
        size: int,
        function: Callable[[bytes | memoryview, int], int],
    ) -> None:
        self.algorithm = algorithm
        self.digest_size = size
        self._function = function
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self.digest_size, "big")


class _Hash(Checksum):
    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.digest_size = self._hash.digest_size

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def _zlib_crc32(data: bytes | memoryview, value: int) -> int:
    return zlib.crc32(data, value)


def _crc32c(data: bytes | memoryview, value: int) -> int:
    return int(_crc32c_module.crc32c(data, value))


def new_checksum(algorithm: str) -> Checksum:
    """A fresh checksum for an S3 algorithm name (any case); unknown -> InvalidRequest."""
    name = algorithm.lower()
    if name == "crc32":
        return _Crc("crc32", 4, _zlib_crc32)
    if name == "crc32c":
        return _Crc("crc32c", 4, _crc32c)
    if name == "crc64nvme":
        return _Crc("crc64nvme", 8, crc64nvme)
    if name in ("sha1", "sha256"):
        return _Hash(name)
    raise InvalidRequest(
        f"Checksum algorithm {algorithm!r} is not supported; "
        f"use one of {', '.join(a.upper() for a in ALGORITHMS)}."
    )


def parse_checksum_headers(
    headers: Mapping[str, Sequence[str]] | Mapping[str, str],
) -> tuple[str, str] | None:
    """The (algorithm, base64 value) of the request's ``x-amz-checksum-<alg>`` header, if any.

    Header names must be lower-case.  More than one checksum header, or a
    value that is not the base64 of a digest of the right size, is
    ``InvalidRequest`` as in S3.
    """
    found: list[tuple[str, str]] = []
    for algorithm in ALGORITHMS:
        raw = headers.get(f"x-amz-checksum-{algorithm}")
        if raw is None:
            continue
        values = [raw] if isinstance(raw, str) else list(raw)
        if len(values) != 1:
            raise InvalidRequest(
                f"Value for x-amz-checksum-{algorithm} header is invalid."
            )
        found.append((algorithm, values[0].strip()))
    if not found:
        return None
    if len(found) > 1:
        raise InvalidRequest(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        )
    algorithm, value = found[0]
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != _DIGEST_SIZES[algorithm]:
        raise InvalidRequest(f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return algorithm, value
