"""The bench's pure parts: statistics, the A/B plan, the table, workload selection, the
multipart upload's plan and XML, and the HTTP response reader (fed from memory, no sockets)."""

from __future__ import annotations

import asyncio
import math
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from tools.bench.client import (
    ProtocolError,
    Response,
    complete_body,
    describe,
    is_multipart_etag,
    read_response,
    xml_text,
)
from tools.bench.run import parse_args
from tools.bench.stats import CellResult, Row, Spread, format_table, percentile, summarize
from tools.bench.workloads import MiB, Part, ab_plan, part_plan, select_workloads, workloads

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
    assert "10/50/-/80/5" in s3orch and "10/0/-/80/5" in direct
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
    assert [w.label for w in every if w.large] == ["PUT 16MiB c1", "GET 16MiB c1", "MPU 64MiB 8MiB\u00d74"]
    assert {w.concurrency for w in every if not w.large and not w.rate} == {1, 16}


def test_multipart_row_is_a_large_row_of_its_object_size_with_four_parts_in_flight() -> None:
    mpu = workloads()[-1]
    assert (mpu.name, mpu.op, mpu.size, mpu.part_size, mpu.concurrency) == ("mpu", "mpu", 64 * MiB, 8 * MiB, 4)
    assert mpu.large and mpu.unit == "MiB/s"
    small = workloads(16 * MiB, 16 * MiB, 5 * MiB)[-1]
    assert small.label == "MPU 16MiB 5MiB\u00d74" and small.part_size == 5 * MiB


def test_quick_runs_a_smaller_multipart_upload_that_keeps_the_part_size_rule() -> None:
    quick, full = parse_args(["--quick"]), parse_args([])
    assert (full.mpu_size, full.mpu_part_size) == (64 * MiB, 8 * MiB)
    assert (quick.mpu_size, quick.mpu_part_size) == (16 * MiB, 5 * MiB)
    assert [p.length for p in part_plan(quick.mpu_size, quick.mpu_part_size)] == [5 * MiB] * 3 + [1 * MiB]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, None),
        ("", None),
        ("put-4k-c1", ["put-4k-c1"]),
        ("get", ["get-4k-c1", "get-4k-c16", "paced-get-1k-100rps", "get-large"]),
        ("c16", ["put-4k-c16", "get-4k-c16", "head-4k-c16", "list-c16"]),
        ("*-c1", ["put-4k-c1", "get-4k-c1", "head-4k-c1", "list-c1"]),
        ("list-c1, *large", ["list-c1", "put-large", "get-large"]),
        ("mpu", ["mpu"]),
        ("put-large,mpu", ["put-large", "mpu"]),
        ("nothing", []),
    ],
)
def test_only_selects_by_exact_name_substring_or_glob(pattern: str | None, expected: list[str] | None) -> None:
    every = workloads()
    chosen = [w.name for w in select_workloads(every, pattern)]
    assert chosen == (expected if expected is not None else [w.name for w in every])


# --- multipart upload -----------------------------------------------------------------------


def test_part_plan_cuts_the_object_into_numbered_contiguous_slices() -> None:
    plan = part_plan(64 * MiB, 8 * MiB)
    assert plan[0] == Part(1, 0, 8 * MiB) and plan[-1] == Part(8, 56 * MiB, 8 * MiB)
    assert [p.number for p in plan] == list(range(1, 9))
    assert all(p.length == 8 * MiB for p in plan)


@pytest.mark.parametrize(
    ("size", "part_size"),
    [(64 * MiB, 8 * MiB), (16 * MiB, 5 * MiB), (5 * MiB + 1, 5 * MiB), (3, 5 * MiB), (3 * MiB, 3 * MiB)],
)
def test_part_plan_covers_every_byte_once_and_only_the_last_part_is_short(size: int, part_size: int) -> None:
    plan = part_plan(size, part_size)
    assert plan[0].offset == 0
    assert all(a.offset + a.length == b.offset for a, b in zip(plan, plan[1:]))
    assert plan[-1].offset + plan[-1].length == size
    assert all(p.length == part_size for p in plan[:-1]) and 0 < plan[-1].length <= part_size


@pytest.mark.parametrize(
    ("size", "part_size"),
    [
        (16 * MiB, 4 * MiB),  # parts but the last under 5 MiB
        (6 * MiB, 5 * MiB - 1),
        (0, 8 * MiB),  # nothing to upload
        (8 * MiB, 0),
        (10_001 * 5 * MiB, 5 * MiB),  # more than 10,000 parts
    ],
)
def test_part_plan_refuses_what_s3_would(size: int, part_size: int) -> None:
    with pytest.raises(ValueError):
        part_plan(size, part_size)


def test_part_plan_at_the_limits() -> None:
    assert len(part_plan(10_000 * 5 * MiB, 5 * MiB)) == 10_000
    assert part_plan(1, 1) == [Part(1, 0, 1)]  # one part may be of any size


def test_complete_body_lists_the_parts_in_ascending_order_whatever_order_they_finished_in() -> None:
    body = complete_body([(3, '"c"'), (1, '"a"'), (2, '"b"')])
    root = ET.fromstring(body)
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    assert root.tag == f"{ns}CompleteMultipartUpload"
    parts = [(p.findtext(f"{ns}PartNumber"), p.findtext(f"{ns}ETag")) for p in root]
    assert parts == [("1", '"a"'), ("2", '"b"'), ("3", '"c"')]
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')


def test_complete_body_escapes_etags_and_accepts_a_dict_view() -> None:
    body = complete_body({2: "x<&>y", 1: '"q"'}.items())
    root = ET.fromstring(body)
    assert [e.text for e in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}ETag")] == ['"q"', "x<&>y"]
    assert b"x&lt;&amp;&gt;y" in body


def test_xml_text_finds_the_first_element_and_decodes_entities() -> None:
    create = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult xmlns="x">'
        b"<Bucket>b</Bucket><Key>mpu/r0</Key><UploadId>abc&amp;def</UploadId></InitiateMultipartUploadResult>"
    )
    assert xml_text(create, "UploadId") == "abc&def"
    complete = b"<CompleteMultipartUploadResult><ETag>&quot;0123-8&quot;</ETag><ETag>2</ETag></CompleteMultipartUploadResult>"
    assert xml_text(complete, "ETag") == '"0123-8"'
    assert xml_text(b"<Error><Code>NoSuchUpload</Code></Error>", "UploadId") is None
    assert xml_text(b"<A>multi\nline</A>", "A") == "multi\nline"


MD5 = "0123456789abcdef0123456789ABCDEF"


@pytest.mark.parametrize(
    ("etag", "parts", "expected"),
    [
        (f'"{MD5}-8"', 8, True),
        (f"{MD5}-8", 8, True),
        (f' "{MD5}-4" ', 4, True),
        (f'"{MD5}-8"', 4, False),  # another part count
        (f'"{MD5}-80"', 8, False),
        (f'"{MD5}"', 8, False),  # a single-PUT ETag
        (f'"{MD5[:-1]}-8"', 8, False),
        (f'"{MD5}-8" x', 8, False),
        ("", 8, False),
        (None, 8, False),
    ],
)
def test_multipart_etag_is_an_md5_then_the_part_count(etag: str | None, parts: int, expected: bool) -> None:
    assert is_multipart_etag(etag, parts) is expected


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
