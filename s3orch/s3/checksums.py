"""The S3 additional checksums (``x-amz-checksum-*``), computed incrementally.

Current AWS SDKs send one of these with every upload (often as an
``aws-chunked`` trailer), so the gateway must compute the same value as
bytes stream through and compare.  Digests are the big-endian bytes of the
CRC (or the hash), base64-encoded, exactly as S3 puts them in headers.
"""

from __future__ import annotations

import base64
import binascii
import functools
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


# --- multipart uploads: checksum types and the checksum of a whole upload ---------------
#
# A multipart upload created with ``x-amz-checksum-algorithm`` has a checksum type:
# COMPOSITE, the checksum of the concatenated binary part checksums followed by ``-N``
# (N parts), or FULL_OBJECT, the CRC of the whole object, which the gateway computes from
# the part CRCs and sizes without reading a byte (CRC combination).  SHA-1 and SHA-256 can
# only be composite, CRC-64/NVME only full-object; CRC-32 and CRC-32C can be both
# (composite by default), as in S3.

COMPOSITE = "COMPOSITE"
FULL_OBJECT = "FULL_OBJECT"
CHECKSUM_TYPES = (COMPOSITE, FULL_OBJECT)


def stored_checksum_type(value: str) -> str:
    """The type of a stored object checksum: one of part checksums ends in ``-<parts>``."""
    head, _, parts = value.rpartition("-")
    return COMPOSITE if head and parts.isdigit() else FULL_OBJECT
_ALLOWED_TYPES = {
    "crc32": (COMPOSITE, FULL_OBJECT),
    "crc32c": (COMPOSITE, FULL_OBJECT),
    "crc64nvme": (FULL_OBJECT,),
    "sha1": (COMPOSITE,),
    "sha256": (COMPOSITE,),
}
UNSUPPORTED_ALGORITHM = (
    "Checksum algorithm provided is unsupported. Please try again with any of the valid types: "
    "[CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
)


def parse_upload_checksum(
    algorithm: str | None, checksum_type: str | None
) -> tuple[str | None, str | None]:
    """CreateMultipartUpload's ``x-amz-checksum-algorithm`` and ``x-amz-checksum-type``:
    the upload's (ALGORITHM, TYPE), both None without an algorithm; InvalidRequest with
    S3's messages for what S3 refuses."""
    wanted_type = checksum_type.strip().upper() if checksum_type is not None else None
    if wanted_type is not None and wanted_type not in CHECKSUM_TYPES:
        raise InvalidRequest("Value for x-amz-checksum-type header is invalid.")
    if algorithm is None:
        if wanted_type is not None:
            raise InvalidRequest(
                "The x-amz-checksum-type header can only be used with the "
                "x-amz-checksum-algorithm header."
            )
        return None, None
    name = algorithm.strip().lower()
    if name not in _ALLOWED_TYPES:
        raise InvalidRequest(UNSUPPORTED_ALGORITHM)
    allowed = _ALLOWED_TYPES[name]
    if wanted_type is None:
        wanted_type = allowed[0]
    elif wanted_type not in allowed:
        raise InvalidRequest(
            f"The {wanted_type} checksum type cannot be used with the {name} checksum algorithm."
        )
    return name.upper(), wanted_type


def parse_object_checksum_header(
    headers: Mapping[str, Sequence[str]],
) -> tuple[str, str] | None:
    """The ``x-amz-checksum-<algorithm>`` a CompleteMultipartUpload may carry: the checksum
    the client expects of the whole object, as (ALGORITHM, base64 value without any
    ``-N`` suffix).  More than one, or a value that is not a digest of the algorithm's
    size (a composite may end in ``-N``), is InvalidRequest."""
    found: list[tuple[str, str]] = []
    for algorithm in ALGORITHMS:
        values = headers.get(f"x-amz-checksum-{algorithm}")
        if not values:
            continue
        if len(values) != 1:
            raise InvalidRequest(f"Value for x-amz-checksum-{algorithm} header is invalid.")
        found.append((algorithm, values[0].strip()))
    if not found:
        return None
    if len(found) > 1:
        raise InvalidRequest(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        )
    algorithm, value = found[0]
    head, dash, count = value.rpartition("-")
    if dash and count.isascii() and count.isdigit() and len(count) <= 5:
        value = head
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != _DIGEST_SIZES[algorithm]:
        raise InvalidRequest(f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return algorithm.upper(), value


def composite_checksum(algorithm: str, part_checksums: Sequence[str]) -> str:
    """S3's COMPOSITE checksum: the algorithm over the concatenated binary part
    checksums (base64 values), base64, then ``-<number of parts>``."""
    combined = new_checksum(algorithm)
    for value in part_checksums:
        combined.update(base64.b64decode(value))
    return f"{combined.b64digest()}-{len(part_checksums)}"


# CRC combination: crc(A + B) from crc(A), crc(B) and len(B).  For these CRCs (reflected,
# initial value and final XOR all ones) shifting crc(A) over len(B) zero bytes and XORing
# crc(B) is exact.  The shift multiplies by x^(8 len(B)) modulo the polynomial (GF(2));
# awscrt does it in C when it has the functions, the fallback keeps the powers of two.
_REFLECTED_POLYS = {"crc32": (0xEDB88320, 32), "crc32c": (0x82F63B78, 32), "crc64nvme": (_CRC64_REFLECTED_POLY, 64)}


def _gf2_multiply(a: int, b: int, poly: int, width: int) -> int:
    """a * b modulo the (reflected) polynomial: bit ``width - 1`` is x^0."""
    top = 1 << (width - 1)
    product = 0
    while a:
        if a & top:
            product ^= b
        a = (a << 1) & ((1 << width) - 1)
        b = (b >> 1) ^ poly if b & 1 else b >> 1
    return product


@functools.lru_cache(maxsize=256)
def _zeros_operator(algorithm: str, power: int) -> int:
    """x^(8 * 2^power) modulo the polynomial (reflected): the shift over 2^power zero bytes."""
    poly, width = _REFLECTED_POLYS[algorithm]
    if power == 0:
        return 1 << (width - 1 - 8)  # x^8
    half = _zeros_operator(algorithm, power - 1)
    return _gf2_multiply(half, half, poly, width)


def _combine_pure(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    poly, width = _REFLECTED_POLYS[algorithm]
    power = 0
    while length2:
        if length2 & 1:
            crc1 = _gf2_multiply(_zeros_operator(algorithm, power), crc1, poly, width)
        length2 >>= 1
        power += 1
    return crc1 ^ crc2


def _load_combiners() -> dict[str, Callable[[int, int, int], int]]:
    try:
        crt = importlib.import_module("awscrt.checksums")
    except ImportError:
        return {}
    found: dict[str, Callable[[int, int, int], int]] = {}
    for algorithm in _REFLECTED_POLYS:
        function = getattr(crt, f"combine_{algorithm}", None)
        if function is not None:
            found[algorithm] = function
    return found


_CRT_COMBINERS = _load_combiners()


def combine_crc(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """The CRC of A + B from the CRCs of A and B and the length of B (CRC32, CRC32C,
    CRC64NVME)."""
    name = algorithm.lower()
    if name not in _REFLECTED_POLYS:
        raise ValueError(f"{algorithm} is not a CRC")
    crt = _CRT_COMBINERS.get(name)
    if crt is not None:
        return int(crt(crc1, crc2, length2))
    return _combine_pure(name, crc1, crc2, length2)


def full_object_checksum(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """S3's FULL_OBJECT checksum of a multipart object: the CRC of the whole object, from
    the parts' (base64 CRC, size) in order."""
    name = algorithm.lower()
    size = _DIGEST_SIZES[name]
    value: int | None = None
    for checksum, length in parts:
        crc = int.from_bytes(base64.b64decode(checksum), "big")
        value = crc if value is None else combine_crc(name, value, crc, length)
    return base64.b64encode((value or 0).to_bytes(size, "big")).decode("ascii")
