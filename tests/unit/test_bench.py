"""The bench's pure parts: statistics, the A/B plan, the table, workload selection and the
HTTP response reader (fed from memory, no sockets)."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from s3orch.testing.bench import (
    CellResult,
    MiB,
    ProtocolError,
    Response,
    Row,
    Spread,
    ab_plan,
    describe,
    format_table,
    percentile,
    read_response,
    select_workloads,
    summarize,
    workloads,
)

# --- statistics -----------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert percentile([10, 20], 25) == 12.5


def test_percentile_ends_are_min_and_max_whatever_the_order() -> None:
    values = [5.0, 1.0, 9.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 9.0
    assert percentile(values, 50) == 4.0


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 50) == 7.5
    assert percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_spread_is_median_and_range_ignoring_nan() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0)
    assert Spread.of([4.0, math.nan, 2.0]) == Spread(3.0, 2.0, 4.0)
    empty = Spread.of([])
    assert math.isnan(empty.median) and math.isnan(empty.low) and math.isnan(empty.high)


def test_cell_throughput_is_ops_per_second_or_mib_per_second() -> None:
    small, large = workloads()[0], workloads()[-1]
    cell = CellResult("w", "t", 0, ops=300, errors=0, seconds=2.0, bytes=512 * MiB, p50_ms=1, p99_ms=2)
    assert cell.throughput(small) == 150.0
    assert cell.throughput(large) == 256.0


# --- A/B plan -------------------------------------------------------------------------------

NAMES = ["put", "get", "head", "list", "big"]


@pytest.mark.parametrize("rounds", [1, 2, 3, 4])
def test_plan_runs_every_workload_on_both_targets_every_round(rounds: int) -> None:
    plan = ab_plan(NAMES, ("A", "B"), rounds)
    assert len(plan) == len(NAMES) * 2 * rounds
    assert Counter((s.round, s.workload, s.target) for s in plan) == {
        (r, n, t): 1 for r in range(rounds) for n in NAMES for t in "AB"
    }


def test_plan_puts_a_workloads_two_targets_back_to_back() -> None:
    plan = ab_plan(NAMES, ("A", "B"), 3)
    for first, second in zip(plan[::2], plan[1::2]):
        assert (first.round, first.workload) == (second.round, second.workload)
        assert {first.target, second.target} == {"A", "B"}


def test_plan_alternates_who_goes_first_by_round_and_by_workload() -> None:
    plan = ab_plan(NAMES, ("A", "B"), 4)
    firsts = {(s.round, s.workload): s.target for s in plan[::2]}
    for name in NAMES:
        by_round = [firsts[(r, name)] for r in range(4)]
        assert by_round in (["A", "B", "A", "B"], ["B", "A", "B", "A"])
    for rnd in range(4):
        by_workload = [firsts[(rnd, n)] for n in NAMES]
        assert all(a != b for a, b in zip(by_workload, by_workload[1:]))
    assert Counter(firsts.values()) == {"A": 10, "B": 10}


def test_plan_with_three_rounds_is_balanced_within_one() -> None:
    plan = ab_plan(NAMES, ("A", "B"), 3)
    for name in NAMES:
        firsts = Counter(s.target for s in plan[::2] if s.workload == name)
        assert abs(firsts["A"] - firsts["B"]) == 1


# --- summary and table ----------------------------------------------------------------------


def _cell(workload: str, target: str, rnd: int, ops: int, p50: float, errors: int = 0) -> CellResult:
    return CellResult(
        workload,
        target,
        rnd,
        ops=ops,
        errors=errors,
        seconds=1.0,
        bytes=ops * 4096,
        p50_ms=p50,
        p99_ms=p50 * 3,
        cpu={"client": 10.0, "s3orch": 50.0 if target == "s3orch" else 0.0, "weed": 80.0, "other": 5.0},
    )


def _sample_rows() -> tuple[list[CellResult], list[Row]]:
    put = workloads()[0]
    cells = [
        _cell(put.name, "direct", 0, 1000, 1.0),
        _cell(put.name, "direct", 1, 800, 1.2),
        _cell(put.name, "direct", 2, 900, 1.1),
        _cell(put.name, "s3orch", 0, 400, 2.5),
        _cell(put.name, "s3orch", 1, 500, 2.0),
        _cell(put.name, "s3orch", 2, 450, 2.2, errors=2),
    ]
    return cells, summarize([put], cells)


def test_summary_takes_medians_and_ratios_of_medians() -> None:
    _, rows = _sample_rows()
    direct, s3orch = rows
    assert direct.target == "direct" and s3orch.target == "s3orch"
    assert direct.throughput == Spread(900.0, 800.0, 1000.0)
    assert direct.throughput_ratio is None
    # Ratios pair the rounds (each pair ran back to back): 400/1000, 500/800, 450/900.
    assert s3orch.throughput_ratio is not None and s3orch.p50_ratio is not None
    assert s3orch.throughput_ratio.median == pytest.approx(0.5)
    assert s3orch.throughput_ratio.low == pytest.approx(0.4)
    assert s3orch.throughput_ratio.high == pytest.approx(0.625)
    assert s3orch.p50_ratio.median == pytest.approx(2.0)
    assert s3orch.p50_ratio.low == pytest.approx(2.0 / 1.2)
    assert s3orch.p50_ratio.high == pytest.approx(2.5)
    assert s3orch.errors == 2 and s3orch.rounds == 3
    assert s3orch.cpu == {"client": 10.0, "s3orch": 50.0, "weed": 80.0, "other": 5.0}


def test_summary_ratio_ignores_rounds_missing_a_partner() -> None:
    put = workloads()[0]
    cells = [
        _cell(put.name, "direct", 0, 1000, 1.0),
        _cell(put.name, "s3orch", 0, 500, 2.0),
        _cell(put.name, "s3orch", 1, 10, 99.0),  # its direct partner never ran (interrupted)
    ]
    ratio = summarize([put], cells)[1].throughput_ratio
    assert ratio == Spread(0.5, 0.5, 0.5)


def test_summary_without_a_baseline_has_no_ratio() -> None:
    put = workloads()[0]
    rows = summarize([put], [_cell(put.name, "s3orch", 0, 100, 1.0)])
    assert len(rows) == 1 and rows[0].throughput_ratio is None


def test_table_shows_units_spreads_ratios_and_labels_once() -> None:
    put = workloads()[0]
    cells = [_cell(put.name, "direct", 0, 1000, 1.0), _cell(put.name, "s3orch", 0, 500, 2.0)]
    text = format_table(summarize([put], cells))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["workload", "target", "throughput"]
    assert set(lines[1]) <= {"-", " "}
    direct, s3orch = lines[2], lines[3]
    assert direct.startswith(put.label) and "1000 ops/s" in direct and "(1000..1000)" in direct
    assert not s3orch.startswith(put.label) and s3orch.split()[0] == "s3orch"
    assert "0.50x (0.50..0.50)" in s3orch and "2.00x (2.00..2.00)" in s3orch
    assert "x" not in direct.split("ops/s")[1]
    assert "10/50/80/5" in s3orch and "10/0/80/5" in direct
    assert "!!!" not in text


def test_table_columns_line_up() -> None:
    _, rows = _sample_rows()
    lines = format_table(rows).splitlines()
    header, rule = lines[0], lines[1]
    for line in lines[2:4]:
        assert line.index("ops/s") < len(rule)
        assert len(line) <= len(rule)
    assert header.index("target") == lines[2].index("direct")


def test_table_shouts_when_there_were_errors() -> None:
    _, rows = _sample_rows()
    text = format_table(rows)
    assert "2 !!" in text
    assert "!!! 2 REQUEST ERRORS" in text.splitlines()[-1]


def test_table_large_rows_are_in_mib_per_second_and_nan_is_a_dash() -> None:
    large = workloads()[-1]
    cell = CellResult(large.name, "direct", 0, 0, 1, 0.0, 0, math.nan, math.nan)
    text = format_table(summarize([large], [cell]))
    row = text.splitlines()[2]
    assert "- MiB/s" in row and "(-..-)" in row and "-/-/-/-" in row


def test_table_separates_workload_groups_with_a_blank_line() -> None:
    put, get = workloads()[0], workloads()[1]
    cells = [_cell(w.name, t, 0, 100, 1.0) for w in (put, get) for t in ("direct", "s3orch")]
    lines = format_table(summarize([put, get], cells)).splitlines()
    assert lines[4] == "" and lines[5].startswith(get.label)


# --- workloads ------------------------------------------------------------------------------


def test_workload_names_are_unique_and_large_ones_say_their_size() -> None:
    every = workloads(16 * MiB)
    assert len({w.name for w in every}) == len(every)
    assert [w.label for w in every if w.large] == ["PUT 16MiB c1", "GET 16MiB c1"]
    assert {w.concurrency for w in every if not w.large} == {1, 16}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, None),
        ("", None),
        ("put-4k-c1", ["put-4k-c1"]),
        ("get", ["get-4k-c1", "get-4k-c16", "get-large"]),
        ("c16", ["put-4k-c16", "get-4k-c16", "head-4k-c16", "list-c16"]),
        ("*-c1", ["put-4k-c1", "get-4k-c1", "head-4k-c1", "list-c1"]),
        ("list-c1, *large", ["list-c1", "put-large", "get-large"]),
        ("nothing", []),
    ],
)
def test_only_selects_by_exact_name_substring_or_glob(pattern: str | None, expected: list[str] | None) -> None:
    every = workloads()
    chosen = [w.name for w in select_workloads(every, pattern)]
    assert chosen == (expected if expected is not None else [w.name for w in every])


# --- HTTP response reader -------------------------------------------------------------------


def _read(raw: bytes, method: str = "GET", keep_body: bool = True) -> tuple[Response, bytes]:
    """Parse one response from ``raw``; also return what is left for the next response."""

    async def go() -> tuple[Response, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        response = await read_response(reader, method, keep_body=keep_body)
        return response, await reader.read()

    return asyncio.run(go())


def test_content_length_body_leaves_the_next_response_alone() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhelloHTTP/1.1 404 Not Found\r\n"
    response, rest = _read(raw)
    assert (response.status, response.body, response.length) == (200, b"hello", 5)
    assert response.headers["etag"] == '"x"' and response.keep_alive
    assert rest.startswith(b"HTTP/1.1 404")


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT"
    )
    response, rest = _read(raw)
    assert response.body == b"hello, world" and response.length == 12
    assert rest == b"NEXT"


def test_discarded_body_is_counted_not_kept() -> None:
    body = bytes(3 * 1024 * 1024 + 7)
    response, rest = _read(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, keep_body=False)
    assert response.body == b"" and response.length == len(body) and rest == b""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    response, _ = _read(chunked, keep_body=False)
    assert response.body == b"" and response.length == 3


def test_head_204_and_304_have_no_body_despite_content_length() -> None:
    for method, status in (("HEAD", 200), ("GET", 204), ("GET", 304)):
        raw = b"HTTP/1.1 %d X\r\nContent-Length: 4096\r\n\r\nNEXT" % status
        response, rest = _read(raw, method)
        assert response.status == status and response.length == 0 and rest == b"NEXT"
        assert response.headers["content-length"] == "4096"


def test_interim_100_continue_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    response, _ = _read(raw, "PUT")
    assert (response.status, response.body) == (200, b"ok")


def test_connection_close_and_http10_end_keep_alive() -> None:
    response, _ = _read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert not response.keep_alive
    response, _ = _read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not response.keep_alive
    response, _ = _read(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert response.keep_alive


def test_body_without_length_runs_to_eof_and_closes() -> None:
    response, _ = _read(b"HTTP/1.1 500 Oops\r\n\r\n<Error/>")
    assert (response.status, response.body, response.keep_alive) == (500, b"<Error/>", False)


def test_repeated_headers_are_joined() -> None:
    response, _ = _read(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n")
    assert response.headers["x-a"] == "1, 2"


@pytest.mark.parametrize(
    "raw",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    ],
)
def test_malformed_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        _read(raw)


def test_truncated_body_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        _read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(asyncio.IncompleteReadError):
        _read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", keep_body=False)


def test_error_description_names_the_s3_error_code() -> None:
    body = b'<?xml version="1.0"?>\n<Error><Code>SlowDown</Code><Message>Please\nreduce</Message></Error>'
    assert describe(Response(503, {}, body, len(body), True)) == "HTTP 503 SlowDown: Please\nreduce"
    assert describe(Response(502, {}, b"bad\n  gateway", 14, True)) == "HTTP 502 bad gateway"
    assert describe(Response(403, {}, b"", 0, True)) == "HTTP 403"
