"""SigV4 claims: the ``Authorization`` header and credential scope as the client sent them.

Everything is bounded and checked before any key is derived; error bodies echo
client input only through :func:`echo` (valid UTF-8, no control characters, cut).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from s3orch.s3.errors import (
    AuthorizationHeaderMalformed,
    InvalidRequest,
    S3Error,
)
from s3orch.s3.sigv4.canonical import ALGORITHM

_SCOPE_DATE = re.compile(r"[0-9]{8}")
#: Region and service names in a credential scope: visible ASCII, no "/", bounded.
_SCOPE_NAME = re.compile(r"[!-.0-~]{1,64}")

#: Most names one SignedHeaders list may carry.  botocore signs every header it
#: sends; even a PUT with a hundred metadata headers stays well below this.
MAX_SIGNED_HEADERS = 256
#: Longest SignedHeaders value accepted (characters).
MAX_SIGNED_HEADERS_LENGTH = 8192
#: Error bodies echo a string to sign or canonical request only up to this size.
ECHO_LIMIT = 4096

_MALFORMED_CREDENTIAL = 'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
_HEADER_PREFIX = "The authorization header is malformed; "
_QUERY_PREFIX = "Error parsing the X-Amz-Credential parameter; "
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """Client input made safe to echo in an error body: valid UTF-8, no control characters, bounded.

    Values decoded with ``surrogateescape`` (invalid UTF-8 from the wire) get
    U+FFFD; anything over ``limit`` characters is cut.
    """
    text = value[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("\ufffd", text)


class ParsedAuth(NamedTuple):
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        """Credential scope as it appears in the string to sign."""
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


#: Claims up to this many characters are memoised (one client sends the same credential and
#: SignedHeaders on every request); longer ones are parsed each time, so the caches stay small.
_MEMO_LIMIT = 512


def _parse_credential(
    value: str, error: type[S3Error], prefix: str
) -> tuple[str, str, str, str]:
    """``AKID/YYYYMMDD/REGION/SERVICE/aws4_request``, each part checked before anything is derived."""
    parts = _credential_parts(value) if len(value) <= _MEMO_LIMIT else _split_credential(value)
    if parts is None:
        raise error(prefix + _MALFORMED_CREDENTIAL)
    return parts


def _split_credential(value: str) -> tuple[str, str, str, str] | None:
    parts = value.split("/")
    if (
        len(parts) != 5
        or parts[4] != "aws4_request"
        or not parts[0]
        or not _SCOPE_DATE.fullmatch(parts[1])
        or not _SCOPE_NAME.fullmatch(parts[2])
        or not _SCOPE_NAME.fullmatch(parts[3])
    ):
        return None
    return parts[0], parts[1], parts[2], parts[3]


#: A pure function of the string (None: malformed), memoised: bounded in entries and size.
_credential_parts = lru_cache(maxsize=256)(_split_credential)


def _parse_signed_headers(value: str, error: type[S3Error]) -> tuple[str, ...]:
    """SignedHeaders as sent (lower-cased), bounded in count and length.

    The order is not checked here: an unsorted or repeated list is AWS's
    SignatureDoesNotMatch, which the verifier answers without building
    anything (see ``signed_headers_in_order``).
    """
    if len(value) > MAX_SIGNED_HEADERS_LENGTH or value.count(";") >= MAX_SIGNED_HEADERS:
        raise error(
            f"SignedHeaders may name at most {MAX_SIGNED_HEADERS} headers "
            f"in at most {MAX_SIGNED_HEADERS_LENGTH} characters."
        )
    names = _signed_names(value) if len(value) <= _MEMO_LIMIT else _split_signed_names(value)
    if names is None:
        raise error("SignedHeaders is malformed.")
    return names


def _split_signed_names(value: str) -> tuple[str, ...] | None:
    names = tuple(name.strip().lower() for name in value.split(";"))
    return names if all(names) else None


#: A pure function of the string (None: malformed), memoised: bounded in entries and size.
_signed_names = lru_cache(maxsize=256)(_split_signed_names)


def signed_headers_in_order(names: Sequence[str]) -> bool:
    """True when the names are strictly ascending: sorted, each once (what SigV4 signs)."""
    if type(names) is tuple and len(names) <= 64:
        return _in_order(names)
    return all(a < b for a, b in zip(names, names[1:], strict=False))


@lru_cache(maxsize=256)
def _in_order(names: tuple[str, ...]) -> bool:
    """Memoised for the few SignedHeaders lists clients send (bounded: at most 64 names each)."""
    return all(a < b for a, b in zip(names, names[1:], strict=False))


#: The form every SDK sends (fixed order, no blanks inside a value): parsed by one match. A value
#: here is visible ASCII without a comma, so the general parse below would read it identically.
_COMMON_FORM = re.compile(
    ALGORITHM + r" Credential=([!-+\--~]+), ?SignedHeaders=([!-+\--~]+), ?Signature=([!-+\--~]+)"
)


def parse_authorization_header(value: str) -> ParsedAuth:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

    Spaces after the commas are optional, components may come in any order.
    Anything else is ``AuthorizationHeaderMalformed``; another algorithm
    (SigV2, SigV4a) is ``InvalidRequest`` as AWS answers.
    """
    value = value.strip()
    common = _COMMON_FORM.fullmatch(value)
    if common is not None:
        credential, signed_value, signature = common.groups()
        access_key, date, region, service = _parse_credential(
            credential, AuthorizationHeaderMalformed, _HEADER_PREFIX
        )
        signed = _parse_signed_headers(signed_value, AuthorizationHeaderMalformed)
        return ParsedAuth(access_key, date, region, service, signed, signature)
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        if algorithm.startswith("AWS"):
            raise InvalidRequest(
                "The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256."
            )
        raise AuthorizationHeaderMalformed()
    fields: dict[str, str] = {}
    for component in rest.split(","):
        name, sep, field_value = component.strip().partition("=")
        if (
            not sep
            or name not in ("Credential", "SignedHeaders", "Signature")
            or name in fields
        ):
            raise AuthorizationHeaderMalformed()
        fields[name] = field_value.strip()
    if len(fields) != 3:
        raise AuthorizationHeaderMalformed()
    access_key, date, region, service = _parse_credential(
        fields["Credential"], AuthorizationHeaderMalformed, _HEADER_PREFIX
    )
    signed = _parse_signed_headers(
        fields["SignedHeaders"], AuthorizationHeaderMalformed
    )
    if not fields["Signature"]:
        raise AuthorizationHeaderMalformed()
    return ParsedAuth(access_key, date, region, service, signed, fields["Signature"])

