"""The dashboard's pure parts: the streamed form parser, the usage history and its chart,
sessions and the login throttle (clock-driven)."""

from __future__ import annotations

import hashlib
import io

import pytest
from twisted.internet.task import Clock

from s3orch.store.records import QuotaRow
from s3orch.ui.auth import LOCKOUT_SECONDS, MAX_FAILURES, LoginThrottle, Sessions
from s3orch.ui.form import CHUNK, FormError, parse_form
from s3orch.ui.history import UsageHistory

BOUNDARY = "b0und"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b"preamble ignored\r\n"
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 3, CHUNK, CHUNK + 7, 3 * CHUNK + 11])
def test_the_file_field_is_spooled_with_its_digests_whatever_its_size(size: int) -> None:
    data = (b"\r\n--b0un" + bytes(range(256))) * (size // 264 + 1)
    data = data[:size]
    parsed = parse_form(io.BytesIO(form(("key", b"photos/a", None), ("file", data, "a.bin"))), CTYPE)
    assert parsed.fields == {"key": "photos/a"} and parsed.filename == "a.bin"
    assert parsed.file is not None and parsed.file.length == size
    assert parsed.file.reader().read() == data
    assert parsed.file.md5_hex == hashlib.md5(data).hexdigest()
    assert parsed.file.sha256_hex == hashlib.sha256(data).hexdigest()


def test_malformed_forms_are_refused() -> None:
    good = form(("file", b"x", "f"))
    with pytest.raises(FormError):
        parse_form(io.BytesIO(good[:-12]), CTYPE)  # no closing boundary
    with pytest.raises(FormError):
        parse_form(io.BytesIO(good), "application/json")
    with pytest.raises(FormError):
        parse_form(io.BytesIO(form(("key", b"k" * (70 * 1024), None))), CTYPE)  # a field over 64 KiB


class Quotas:
    def __init__(self) -> None:
        self.used = {"a": 10, "b": 0}

    async def get_quotas(self) -> dict[str, QuotaRow]:
        return {name: QuotaRow(name, 100, used, 0, 0, 1) for name, used in self.used.items()}


def test_history_keeps_a_day_of_samples_and_draws_them() -> None:
    clock = Clock()
    clock.advance(1_000_000)
    store = Quotas()
    history = UsageHistory(store, clock)  # type: ignore[arg-type]
    assert "No samples yet" in history.svg()
    history.sample_soon()
    clock.advance(3600)
    store.used["a"] = 50
    history.sample_soon()
    assert [v for _, v in history.series()["a"]] == [10, 50]
    svg = history.svg()
    assert svg.count("<polyline") == 2 and "<title>a</title>" in svg
    clock.advance(25 * 3600)
    history.sample_soon()
    assert [v for _, v in history.series()["a"]] == [50]  # older than a day: dropped


def test_sessions_are_signed_expire_and_carry_a_csrf_token() -> None:
    clock = Clock()
    sessions = Sessions("secret", clock)
    cookie = sessions.issue()
    assert sessions.valid(cookie) and Sessions("secret", clock).valid(cookie)
    assert not Sessions("other", clock).valid(cookie)
    expires, nonce, mac = cookie.split(".")
    assert not sessions.valid(f"{int(expires) + 1000}.{nonce}.{mac}")
    token = sessions.csrf_token(cookie)
    assert sessions.csrf_valid(cookie, token) and not sessions.csrf_valid(cookie, "") and not sessions.csrf_valid(cookie, None)
    clock.advance(24 * 3600 + 1)
    assert not sessions.valid(cookie)


def test_the_throttle_locks_an_ip_after_five_failures_for_five_minutes() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(MAX_FAILURES - 1):
        throttle.failed("10.0.0.1")
    assert not throttle.locked("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.locked("10.0.0.1") and not throttle.locked("10.0.0.2")
    clock.advance(LOCKOUT_SECONDS - 1)
    assert throttle.locked("10.0.0.1")
    clock.advance(2)
    assert not throttle.locked("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert not throttle.locked("10.0.0.1")  # a fresh count after the lockout
