"""The bench's floor (a bare twisted.web server, target ``floor``), pure parts: the plan that adds
it to the HEAD/GET 4 KiB rows only, its ratios and summary phrases, the paced rows' note when
the goal is below the backend's own p99, its CPU column and JSON keys, and the server itself
answering at the byte level."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from twisted.internet import task
from twisted.internet.testing import StringTransport

from tools.bench.cells import small_body
from tools.bench.floor import FixedBody, QuietSite
from tools.bench.run import floor_workloads, parse_args, results_document, wants_floor
from tools.bench.stats import CellResult, format_table, summarize, summary_line, summary_lines
from tools.bench.workloads import FLOOR, FLOOR_WORKLOADS, SMALL_SIZE, TARGETS, Workload, ab_plan, workloads

# --- the plan -------------------------------------------------------------------------------


def test_floor_runs_only_in_its_rows_each_round_back_to_back_with_the_three_targets() -> None:
    names = [w.name for w in workloads()]
    plan = ab_plan(names, TARGETS, 3, {name: (FLOOR,) for name in FLOOR_WORKLOADS})
    counts = Counter((s.workload, s.target) for s in plan)
    for name in names:
        expected = {*TARGETS, FLOOR} if name in FLOOR_WORKLOADS else set(TARGETS)
        assert {t for (n, t) in counts if n == name} == expected
        assert all(counts[name, t] == 3 for t in expected)
    # Each (round, workload) is one contiguous run of cells.
    runs = [(s.round, s.workload) for s in plan]
    assert len(set(runs)) == len([r for i, r in enumerate(runs) if i == 0 or runs[i - 1] != r])


def test_floor_rows_rotate_over_four_targets_so_no_target_leads_twice_in_four_rounds() -> None:
    plan = ab_plan(["get-4k-c1"], TARGETS, 4, {"get-4k-c1": (FLOOR,)})
    firsts = [next(s.target for s in plan if s.round == r) for r in range(4)]
    assert Counter(firsts) == {t: 1 for t in (*TARGETS, FLOOR)}


def test_plan_without_extra_is_unchanged() -> None:
    assert ab_plan(["a", "b"], TARGETS, 2, {}) == ab_plan(["a", "b"], TARGETS, 2)


def test_floor_is_the_head_and_get_4k_rows_and_only_with_one_gateway_process() -> None:
    every = workloads()
    assert floor_workloads(every) == ["get-4k-c1", "head-4k-c1", "get-4k-c16", "head-4k-c16"]
    assert wants_floor(every, 1) and not wants_floor(every, 4)
    assert not wants_floor([w for w in every if w.op == "put"], 1)
    # The paced GET reads 1 KiB objects: the floor's 4 KiB body would not pass its check.
    assert not any(w.rate for w in every if w.name in FLOOR_WORKLOADS)


# --- ratios and summary lines ---------------------------------------------------------------


def _cell(workload: str, target: str, rnd: int, ops: int, p99: float = 3.0) -> CellResult:
    return CellResult(
        workload, target, rnd, ops=ops, errors=0, seconds=1.0, bytes=ops * 4096, p50_ms=1.0, p99_ms=p99,
        cpu={"client": 1.0},
    )  # fmt: skip


def _row(name: str) -> Workload:
    return next(w for w in workloads() if w.name == name)


def test_floor_row_is_paired_with_direct_and_s3orch_and_rclone_with_the_floor() -> None:
    head = _row("head-4k-c1")
    cells = [
        _cell(head.name, "direct", 0, 1000), _cell(head.name, "s3orch", 0, 500),
        _cell(head.name, "rclone", 0, 1200), _cell(head.name, FLOOR, 0, 1600),
        _cell(head.name, "direct", 1, 1000), _cell(head.name, "s3orch", 1, 600),
        _cell(head.name, "rclone", 1, 1000), _cell(head.name, FLOOR, 1, 2000),
    ]  # fmt: skip
    direct, s3orch, rclone, floor = summarize([head], cells)
    assert floor.target == FLOOR and floor.throughput_ratio is not None
    assert floor.throughput_ratio.median == pytest.approx(1.8)  # per round: 1.6 and 2.0
    assert s3orch.versus_floor is not None and rclone.versus_floor is not None
    assert (s3orch.versus_floor.low, s3orch.versus_floor.high) == pytest.approx((0.3, 0.3125))
    assert rclone.versus_floor.median == pytest.approx((0.75 + 0.5) / 2)
    assert direct.versus_floor is None and floor.versus_floor is None


def test_summary_line_keeps_its_verdicts_and_adds_the_floor_with_what_it_means() -> None:
    head = _row("head-4k-c1")
    cells = [
        _cell(head.name, "direct", 0, 1000), _cell(head.name, "s3orch", 0, 800),
        _cell(head.name, "rclone", 0, 2000), _cell(head.name, FLOOR, 0, 1600),
    ]  # fmt: skip
    line = summary_line(summarize([head], cells))
    assert line.startswith("HEAD 4KiB c1: direct 1000 ops/s; s3orch 0.80x (0.80..0.80); rclone 2.00x")
    assert "s3orch/rclone 0.40x (BELOW rclone)" in line
    assert "twisted.web floor 1.60x (1.60..1.60) direct (no work at all: s3orch cannot exceed it)" in line
    assert "s3orch/floor 0.50x (0.50..0.50), rclone/floor 1.25x (1.25..1.25)" in line
    assert "rclone ABOVE the floor in every round: s3orch >= rclone is out of reach on this row" in line
    assert "floor 1.60x (1.60..1.60);" not in line  # not also listed as a plain ratio


def test_summary_line_of_a_peer_below_the_floor_claims_nothing_out_of_reach() -> None:
    get = _row("get-4k-c16")
    cells = [
        _cell(get.name, "direct", 0, 1000), _cell(get.name, "s3orch", 0, 800),
        _cell(get.name, "rclone", 0, 900), _cell(get.name, FLOOR, 0, 2000),
    ]  # fmt: skip
    line = summary_line(summarize([get], cells))
    assert "goal >= 0.70x direct: met" in line
    assert "twisted.web floor 2.00x" in line and "rclone/floor 0.45x" in line
    assert "out of reach" not in line


def test_summary_line_claims_out_of_reach_only_when_the_peer_beat_the_floor_in_every_round() -> None:
    head = _row("head-4k-c16")
    cells = [
        _cell(head.name, "direct", 0, 1000), _cell(head.name, "rclone", 0, 1500), _cell(head.name, FLOOR, 0, 1400),
        _cell(head.name, "direct", 1, 1000), _cell(head.name, "rclone", 1, 1300), _cell(head.name, FLOOR, 1, 1400),
        _cell(head.name, "direct", 2, 1000), _cell(head.name, "rclone", 2, 1500), _cell(head.name, FLOOR, 2, 1400),
    ]  # fmt: skip
    line = summary_line(summarize([head], cells))
    assert "rclone/floor 1.07x (0.93..1.07)" in line
    assert "out of reach" not in line


def test_summary_line_without_the_floor_says_nothing_of_it() -> None:
    get = _row("get-4k-c16")
    cells = [_cell(get.name, t, 0, 1000) for t in TARGETS]
    assert FLOOR not in summary_line(summarize([get], cells))


def test_paced_line_says_when_the_goal_is_below_the_backends_own_p99() -> None:
    paced_put, paced_get = (w for w in workloads() if w.rate)
    cells = [
        _cell(paced_put.name, "direct", 0, 100, p99=2.0),
        _cell(paced_put.name, "s3orch", 0, 100, p99=6.5),
        _cell(paced_get.name, "direct", 0, 100, p99=6.2),
        _cell(paced_get.name, "s3orch", 0, 100, p99=8.0),
    ]
    put_line, get_line = summary_lines(summarize([paced_put, paced_get], cells))
    assert "goal p99 <= 3 ms: MISSED" in get_line
    assert "goal below the backend's own p99 (direct 6.20 ms)" in get_line
    assert "goal p99 <= 7 ms: met" in put_line and "below the backend" not in put_line


def test_table_has_the_floor_line_and_its_cpu_column_last() -> None:
    get = _row("get-4k-c1")
    cells = [_cell(get.name, t, 0, n) for t, n in zip((*TARGETS, FLOOR), (1000, 500, 800, 1500), strict=True)]
    for c in cells:
        c.cpu = {"client": 1.0, "s3orch": 2.0, "rclone": 3.0, "weed": 4.0, "other": 5.0, FLOOR: 6.0}
    lines = format_table(summarize([get], cells)).splitlines()
    assert "client/s3orch/rclone/weed/other/floor" in lines[0]
    floor = lines[-1]
    assert floor.split()[0] == FLOOR and "1.50x (1.50..1.50)" in floor and "1/2/3/4/5/6" in floor


def test_json_keeps_its_keys_and_adds_the_floors() -> None:
    opts = parse_args(["--quick", "--results-dir", "/tmp/unused"])
    selected = [_row("head-4k-c1")]
    cells = [_cell("head-4k-c1", t, 0, 1000) for t in (*TARGETS, FLOOR)]
    doc = results_document(time.time(), opts, selected, cells, summarize(selected, cells), {})
    assert doc["options"]["floor_workloads"] == ["head-4k-c1"]
    assert doc["options"]["targets"] == list(TARGETS)
    by_target = {row["target"]: row for row in doc["summary"]}
    assert set(by_target) == {*TARGETS, FLOOR}
    assert by_target[FLOOR]["throughput_ratio"]["median"] == pytest.approx(1.0)
    assert by_target["s3orch"]["versus_floor"]["median"] == pytest.approx(1.0)
    assert by_target["direct"]["versus_floor"] is None
    assert {"versus_peer", "throughput_ratio", "p50_ratio", "late"} <= set(by_target["s3orch"])
    assert {c["target"] for c in doc["cells"]} == {*TARGETS, FLOOR}


# --- the server -----------------------------------------------------------------------------


def _exchange(request: bytes) -> bytes:
    site = QuietSite(FixedBody(small_body(SMALL_SIZE)), reactor=task.Clock())  # type: ignore[no-untyped-call]
    protocol = site.buildProtocol(None)  # type: ignore[no-untyped-call]
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return bytes(transport.value())


def test_floor_answers_get_on_any_path_with_the_benchs_4k_body() -> None:
    answer = _exchange(b"GET /bucket/obj/0001 HTTP/1.1\r\nHost: x\r\nAuthorization: whatever\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 4096" in head.split(b"\r\n")
    assert body == small_body(SMALL_SIZE)


def test_floor_answers_head_with_the_length_and_no_body() -> None:
    answer = _exchange(b"HEAD /bucket/obj/0002 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and sep
    assert b"Content-Length: 4096" in head.split(b"\r\n")
    assert body == b""


def test_floor_keeps_the_connection_for_the_next_request() -> None:
    one = b"HEAD /b/k HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _exchange(one + one).count(b"HTTP/1.1 200 ") == 2


def test_floor_serves_the_file_it_is_given(tmp_path: Path) -> None:
    from tools.bench.environment import FLOOR_SCRIPT, FloorServer

    server = FloorServer(tmp_path / "floor")
    assert server.body_path.read_bytes() == small_body(SMALL_SIZE)
    command = server._command()
    assert command[1:3] == ["-P", str(FLOOR_SCRIPT)] and FLOOR_SCRIPT.name == "floor.py"
    assert command[command.index("--body") + 1] == str(server.body_path)
    assert command[command.index("--port") + 1] == str(server.port)
