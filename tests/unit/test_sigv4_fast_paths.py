"""The shortcuts of SigV4 canonicalisation give exactly what the general rules give."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.sigv4 import canonical


def _general_uri(raw_path: bytes) -> str:
    return "/".join(quote_from_bytes(unquote_to_bytes(s), safe="") for s in raw_path.split(b"/"))


def _general_value(value: str) -> str:
    return re.sub(r"[ \t\r\n]+", " ", value).strip()


@given(st.binary(max_size=40) | st.from_regex(rb"[A-Za-z0-9\-._~/%+ ]{0,30}", fullmatch=True))
def test_the_plain_path_shortcut_matches_the_general_rule(raw_path: bytes) -> None:
    if raw_path:
        assert canonical.canonical_uri_from_raw_path(raw_path) == _general_uri(raw_path)


@given(st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003ab,;", max_size=20))
def test_the_header_value_shortcut_matches_the_general_rule(value: str) -> None:
    assert canonical._canonical_value(value) == _general_value(value)


def test_plain_paths_and_hmacs() -> None:
    assert canonical.canonical_uri_from_raw_path(b"/bench/obj/0001") == "/bench/obj/0001"
    assert canonical.canonical_uri_from_raw_path(b"/b/a%2Fb c") == "/b/a%2Fb%20c"
    key, message = b"k" * 32, "AWS4-HMAC-SHA256\n\u00e9"
    expected = hmac.new(key, message.encode(), hashlib.sha256)
    assert canonical.hmac_hex(key, message) == expected.hexdigest()
    assert canonical._hmac(key, message) == expected.digest()


def test_amz_dates_cached_or_not_parse_the_same() -> None:
    assert canonical.parse_amz_date("20130524T000000Z") == 1369353600.0
    assert canonical.parse_amz_date("20130524T000000Z") == 1369353600.0  # from the cache
    for bad in ("20130524T000000", "20130524T000000Z" * 100, "20131324T000000Z", "2013052٤T000000Z"):
        assert canonical.parse_amz_date(bad) is None
