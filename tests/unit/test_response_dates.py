"""Every response carries one ``Date`` (RFC 9110 5.6.7) and the S3 front door's ``Server``.

S3 requests skip twisted.web's resource lookup (http/site.py), which is where Twisted sets
both headers: this holds them in place, for answers, errors and the operational endpoints.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
from twisted.web import http

from s3orch.http import dates
from s3orch.store.interface import ObjectRecord
from tests.unit.frontdoor_fakes import FrontDoor, signed_request


def _headers(raw: bytes) -> list[tuple[bytes, bytes]]:
    head = raw.partition(b"\r\n\r\n")[0]
    return [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]  # type: ignore[misc]


def _one(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    (value,) = [v for k, v in headers if k.lower() == name]
    return value


def _check_date(value: bytes) -> None:
    assert abs(parsedate_to_datetime(value.decode()).timestamp() - time.time()) < 5


def test_answers_errors_and_ops_endpoints_carry_one_date_and_the_s3orch_server() -> None:
    door = FrontDoor()
    door.objects.store(ObjectRecord("photos", "k", "w", 5, "e" * 32, 1_700_000_000.0), b"hello")
    for raw, status in (
        (signed_request("GET", "/photos/k"), b"200"),
        (signed_request("GET", "/photos/missing"), b"404"),
        (signed_request("HEAD", "/photos/k"), b"200"),
    ):
        _, transport = door.send(raw)
        sent = transport.value()
        assert sent.split(b" ")[1] == status
        headers = _headers(sent)
        _check_date(_one(headers, b"date"))
        assert _one(headers, b"server") == b"s3orch"
    _, transport = door.send(b"GET /health HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    _check_date(_one(_headers(transport.value()), b"date"))


def test_the_date_is_formatted_once_a_second_and_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.2]
    monkeypatch.setattr(time, "time", lambda: now[0])
    first = dates.http_date()
    assert first == http.datetimeToString(1_700_000_000) == b"Tue, 14 Nov 2023 22:13:20 GMT"
    now[0] = 1_700_000_000.9
    assert dates.http_date() is first  # the same second: the text made for it
    now[0] = 1_700_000_001.0
    assert dates.http_date() == b"Tue, 14 Nov 2023 22:13:21 GMT"
