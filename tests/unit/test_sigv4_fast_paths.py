"""The shortcuts of SigV4 canonicalisation give exactly what the general rules give."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.sigv4 import canonical, claims, sign


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


def _general_signing_host(url: str) -> tuple[str, str, str]:
    """What the signer did before its shortcut: urlsplit, default ports dropped."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if parts.port is not None and {"http": 80, "https": 443}.get(parts.scheme.lower()) == parts.port:
        host = host[: host.rfind(":")]
    return host, parts.path or "/", parts.query


def _outcome(function: Callable[[str], object], value: str) -> object:
    try:
        return function(value)
    except Exception as exc:  # the same error, raised either way
        return (type(exc), str(exc))


@given(
    st.from_regex(r"https?://[a-z0-9.\-]{1,12}(:[0-9]{0,6})?(/[a-zA-Z0-9%/~?#@:= ]{0,20})?", fullmatch=True)
    | st.text(alphabet="htps:/?#@[]%. -_~08aZ", max_size=30)
)
def test_the_plain_url_shortcut_splits_as_urlsplit(url: str) -> None:
    assert _outcome(sign._signing_host, url) == _outcome(_general_signing_host, url)


def test_plain_urls_drop_only_default_ports() -> None:
    assert sign._signing_host("http://127.0.0.1:8333/b/k?x=1") == ("127.0.0.1:8333", "/b/k", "x=1")
    assert sign._signing_host("https://h.test:443") == ("h.test", "/", "")
    assert sign._signing_host("http://h.test:0080/a?b?c") == ("h.test", "/a", "b?c")


@given(st.floats(min_value=-1e10, max_value=1e11, allow_nan=False), st.floats(min_value=0, max_value=3))
def test_amz_date_formatting_reuses_only_the_same_second(first: float, step: float) -> None:
    for moment in (first, first + step, first):
        assert canonical.format_amz_date(moment) == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(moment))


@given(st.binary(max_size=30))
def test_query_components_without_percent_decode_as_unquoting_would(raw: bytes) -> None:
    assert canonical._decode_component(raw) == unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


_NAME = st.text(alphabet="abcxyz-;; \t,", min_size=0, max_size=12)
_TOKEN = st.text(alphabet="AKID019/us-east-1s3aws4_request=+ ,\u00e9", min_size=0, max_size=40)


@given(_TOKEN, _NAME, st.text(alphabet="0123456789abcdef= ,", max_size=10), st.sampled_from([", ", ","]))
def test_the_common_authorization_form_parses_as_the_general_form(
    credential: str, signed: str, signature: str, comma: str
) -> None:
    common = f"AWS4-HMAC-SHA256 Credential={credential}{comma}SignedHeaders={signed}{comma}Signature={signature}"
    # The same components in another order never take the one-match shortcut.
    reordered = f"AWS4-HMAC-SHA256 Signature={signature}, Credential={credential}, SignedHeaders={signed}"
    if comma in credential + signed + signature or "," in credential + signed + signature:
        return  # not one header's three components any more
    assert _outcome(claims.parse_authorization_header, common) == _outcome(
        claims.parse_authorization_header, reordered
    )


def test_the_common_authorization_form_is_parsed() -> None:
    value = (
        "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )
    for _ in range(2):  # parsed, then memoised
        parsed = claims.parse_authorization_header(value)
        assert parsed.access_key == "AKID" and parsed.region == "us-east-1"
        assert parsed.signed_headers == ("host", "x-amz-date") and parsed.signature == "abc"


@given(st.lists(st.sampled_from(["a", "b", "c", "host", "x-amz-date"]), max_size=6))
def test_memoised_order_check_agrees_with_the_general_one(names: list[str]) -> None:
    expected = all(a < b for a, b in zip(names, names[1:], strict=False))
    assert claims.signed_headers_in_order(tuple(names)) is expected
    assert claims.signed_headers_in_order(names) is expected
