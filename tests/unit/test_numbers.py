"""Client-sent numbers: ASCII digits only, bounded length, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.numbers import parse_decimal, parse_signed_decimal


def test_plain_digits_parse() -> None:
    assert parse_decimal("0") == 0
    assert parse_decimal("1024") == 1024
    assert parse_decimal("9223372036854775807") == 2**63 - 1


def test_unicode_digits_whitespace_signs_and_underscores_are_refused() -> None:
    for text in ("²", "1²", "٣", " 1", "1 ", "+1", "-1", "1_000", "", None, "0x10", "1e3"):
        assert parse_decimal(text) is None, text


def test_length_and_maximum_caps() -> None:
    assert parse_decimal("1" * 20) is None
    assert parse_decimal("1" * 5000) is None
    assert parse_decimal("12", max_digits=1) is None
    assert parse_decimal("10001", maximum=10000) is None
    assert parse_decimal("10000", maximum=10000) == 10000


def test_signed() -> None:
    assert parse_signed_decimal("-5") == -5
    assert parse_signed_decimal("5") == 5
    assert parse_signed_decimal("--5") is None
    assert parse_signed_decimal("-") is None


@given(st.text(max_size=64))
def test_any_text_gives_a_bounded_int_or_none(text: str) -> None:
    value = parse_decimal(text)
    assert value is None or (0 <= value < 10**19 and text.isascii() and text.isdigit())
