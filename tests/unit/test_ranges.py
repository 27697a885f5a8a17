"""Range parsing: AWS's answers for valid, invalid, unsatisfiable and empty-object ranges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.errors import InvalidRange
from s3orch.s3.ranges import (
    content_range,
    parse_content_range,
    parse_range,
    unsatisfied_content_range,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 11, (0, 0)),
        ("bytes=4-7", 11, (4, 7)),
        ("bytes=4-", 11, (4, 10)),
        ("bytes=-3", 11, (8, 10)),
        ("bytes=-11", 11, (0, 10)),
        ("bytes=-100", 11, (0, 10)),
        ("bytes=0-100", 11, (0, 10)),
        ("bytes=10-10", 11, (10, 10)),
        ("bytes=0-99999999999999999999", 11, (0, 10)),
        ("bytes=0-" + "9" * 5000, 11, (0, 10)),
        ("bytes=-99999999999999999999", 11, (0, 10)),
        ("bytes=0000000000000000000000000004-7", 11, (4, 7)),
        ("Bytes=1-2", 11, (1, 2)),
        (" bytes = 1-2 ", 11, (1, 2)),
        ("bytes=1-2,", 11, (1, 2)),
    ],
)
def test_satisfiable_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=5-4",
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=1",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1 - 2",
        "bytes=\u0661-\u0662",  # Arabic-Indic digits are not DIGIT
        "items=0-1",
        "bytes 0-1",
        "0-1",
        "bytes=0-1,3-4",
        "bytes=0-1, -2",
    ],
)
def test_invalid_or_multiple_ranges_are_ignored(header: str | None) -> None:
    assert parse_range(header, 11) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=11-", 11),
        ("bytes=11-20", 11),
        ("bytes=40-50", 7),
        ("bytes=99999999999999999999-", 11),
        ("bytes=-0", 11),
        # empty objects: s3-tests and AWS answer 416 to any first-byte range
        ("bytes=40-50", 0),
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-0", 0),
    ],
)
def test_unsatisfiable_ranges_are_416(header: str, size: int) -> None:
    with pytest.raises(InvalidRange) as info:
        parse_range(header, size)
    assert info.value.status == 416
    assert info.value.fields["ActualObjectSize"] == str(size)
    assert info.value.fields["RangeRequested"] == header


def test_suffix_range_on_empty_object_serves_the_empty_object() -> None:
    """AWS answers 200 with an empty body to bytes=-N on a zero-byte object."""
    assert parse_range("bytes=-512", 0) is None


def test_content_range_strings() -> None:
    assert content_range(4, 7, 11) == "bytes 4-7/11"
    assert unsatisfied_content_range(11) == "bytes */11"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 4-7/11", (4, 7, 11)),
        ("bytes 0-0/1", (0, 0, 1)),
        ("BYTES  0-9/10", (0, 9, 10)),
        ("bytes */11", None),
        ("bytes 0-9/*", None),
        ("bytes 7-4/11", None),
        ("bytes 0-11/11", None),
        ("bytes 0-9", None),
        ("", None),
        (None, None),
        ("bytes 0-1/" + "9" * 5000, None),
    ],
)
def test_parse_content_range(
    value: str | None, expected: tuple[int, int, int] | None
) -> None:
    assert parse_content_range(value) == expected


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**13),
    st.one_of(st.none(), st.integers(min_value=0, max_value=10**13)),
)
def test_first_byte_ranges_stay_inside_the_object(
    size: int, first: int, last: int | None
) -> None:
    header = f"bytes={first}-{'' if last is None else last}"
    if last is not None and last < first:
        assert parse_range(header, size) is None
        return
    if first >= size:
        with pytest.raises(InvalidRange):
            parse_range(header, size)
        return
    result = parse_range(header, size)
    assert result is not None
    start, end = result
    assert start == first
    assert start <= end <= size - 1
    assert end == (size - 1 if last is None else min(last, size - 1))
    start2, end2, size2 = parse_content_range(content_range(start, end, size)) or (
        0,
        0,
        0,
    )
    assert (start2, end2, size2) == (start, end, size)


@given(
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=1, max_value=10**13),
)
def test_suffix_ranges_are_the_last_n_bytes(size: int, n: int) -> None:
    result = parse_range(f"bytes=-{n}", size)
    assert result is not None
    start, end = result
    assert end == size - 1
    assert end - start + 1 == min(n, size)


@given(st.text(max_size=60), st.integers(min_value=0, max_value=1000))
def test_arbitrary_headers_never_crash(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except InvalidRange:
        return
    if result is not None:
        start, end = result
        assert 0 <= start <= end < size
