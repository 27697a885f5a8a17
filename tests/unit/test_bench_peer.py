"""The bench's third column and its scenarios, pure parts: the three-target plan, the paired
ratios against the baseline and the peer, the one-line summaries, the rclone union config, the
open-loop pacing (on a fake clock), scenario selection and lines, and the million-key builder
(on a real SQLite file with the gateway's schema)."""

from __future__ import annotations

import asyncio
import configparser
import math
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from s3orch.store.migrate import discover, sql_dir
from tools.bench.bigbucket import batches, fill_bucket, key_name
from tools.bench.cells import _read_key, small_body
from tools.bench.pacing import LATE_SLACK, PacedOutcome, run_paced, schedule
from tools.bench.peer import UNION, Upstream, render_rclone_config, serve_command
from tools.bench.run import parse_args
from tools.bench.scenarios import LIST_GOAL_MS, format_list_line, format_rss_line
from tools.bench.stats import CellResult, format_table, summarize, summary_line, summary_lines
from tools.bench.workloads import (
    TARGETS,
    MiB,
    Workload,
    ab_plan,
    select_scenarios,
    select_workloads,
    workloads,
)

NAMES = ["put", "get", "head", "list", "big"]

# --- the plan with three targets ------------------------------------------------------------


def test_three_target_plan_runs_each_target_once_per_workload_and_round_back_to_back() -> None:
    plan = ab_plan(NAMES, TARGETS, 3)
    assert Counter((s.round, s.workload, s.target) for s in plan) == {
        (r, n, t): 1 for r in range(3) for n in NAMES for t in TARGETS
    }
    for i in range(0, len(plan), 3):
        triple = plan[i : i + 3]
        assert len({(s.round, s.workload) for s in triple}) == 1
        assert {s.target for s in triple} == set(TARGETS)


def test_three_target_plan_rotates_the_order_so_each_target_leads_once_in_three_rounds() -> None:
    plan = ab_plan(NAMES, TARGETS, 3)
    for name in NAMES:
        orders = [tuple(s.target for s in plan if s.workload == name and s.round == r) for r in range(3)]
        assert Counter(order[0] for order in orders) == {t: 1 for t in TARGETS}
        assert Counter(order[-1] for order in orders) == {t: 1 for t in TARGETS}


def test_two_target_plan_is_unchanged_by_the_generalisation() -> None:
    plan = ab_plan(["a", "b"], ("A", "B"), 2)
    assert [(s.round, s.workload, s.target) for s in plan] == [
        (0, "a", "A"), (0, "a", "B"), (0, "b", "B"), (0, "b", "A"),
        (1, "a", "B"), (1, "a", "A"), (1, "b", "A"), (1, "b", "B"),
    ]  # fmt: skip


# --- ratios and summary lines ---------------------------------------------------------------


def _cell(workload: str, target: str, rnd: int, ops: int, p99: float = 3.0, errors: int = 0, late: int = 0) -> CellResult:
    return CellResult(
        workload, target, rnd, ops=ops, errors=errors, seconds=1.0, bytes=ops * 4096, p50_ms=1.0,
        p99_ms=p99, cpu={"client": 1.0}, late=late,
    )  # fmt: skip


def _every(name: str) -> list[Workload]:
    return [w for w in workloads() if w.name == name]


def test_each_target_is_divided_by_the_baseline_of_its_own_round_and_s3orch_by_rclone() -> None:
    (put,) = _every("put-4k-c16")
    cells = [
        _cell(put.name, "direct", 0, 1000), _cell(put.name, "s3orch", 0, 600), _cell(put.name, "rclone", 0, 200),
        _cell(put.name, "direct", 1, 2000), _cell(put.name, "s3orch", 1, 800), _cell(put.name, "rclone", 1, 1000),
    ]  # fmt: skip
    direct, s3orch, rclone = summarize([put], cells)
    assert [r.target for r in (direct, s3orch, rclone)] == list(TARGETS)
    assert direct.throughput_ratio is None and direct.versus_peer is None
    assert s3orch.throughput_ratio is not None and rclone.throughput_ratio is not None
    # per round: 0.6 and 0.4 (not 1400/1500 from the medians)
    assert (s3orch.throughput_ratio.low, s3orch.throughput_ratio.high) == pytest.approx((0.4, 0.6))
    assert (rclone.throughput_ratio.low, rclone.throughput_ratio.high) == pytest.approx((0.2, 0.5))
    assert s3orch.versus_peer is not None and rclone.versus_peer is None
    assert (s3orch.versus_peer.low, s3orch.versus_peer.high) == pytest.approx((0.8, 3.0))
    assert s3orch.versus_peer.median == pytest.approx(1.9)


def test_without_the_peer_there_is_no_versus_peer_and_the_rest_stands() -> None:
    (put,) = _every("put-4k-c16")
    cells = [_cell(put.name, "direct", 0, 1000), _cell(put.name, "s3orch", 0, 500)]
    direct, s3orch = summarize([put], cells)
    assert s3orch.versus_peer is None
    assert s3orch.throughput_ratio is not None and s3orch.throughput_ratio.median == pytest.approx(0.5)


def test_summary_line_quotes_the_baseline_both_ratios_the_verdict_and_the_goal() -> None:
    (get,) = _every("get-4k-c16")
    cells = [_cell(get.name, "direct", 0, 1000), _cell(get.name, "s3orch", 0, 750), _cell(get.name, "rclone", 0, 500)]
    line = summary_line(summarize([get], cells))
    assert line.startswith("GET 4KiB c16: direct 1000 ops/s;")
    assert "s3orch 0.75x (0.75..0.75)" in line and "rclone 0.50x (0.50..0.50)" in line
    assert "s3orch/rclone 1.50x (>= rclone)" in line
    assert "goal >= 0.70x direct: met" in line


def test_summary_line_says_below_the_peer_and_missed_and_counts_errors() -> None:
    (head,) = _every("head-4k-c16")
    cells = [
        _cell(head.name, "direct", 0, 1000),
        _cell(head.name, "s3orch", 0, 400, errors=3),
        _cell(head.name, "rclone", 0, 1700),
    ]
    line = summary_line(summarize([head], cells))
    assert "(BELOW rclone)" in line and "goal >= 0.80x direct: MISSED" in line and line.endswith("3 ERRORS")


def test_summary_line_of_a_row_without_a_goal_has_none() -> None:
    (put,) = _every("put-4k-c1")
    cells = [_cell(put.name, t, 0, 100) for t in TARGETS]
    assert "goal" not in summary_line(summarize([put], cells))


def test_paced_summary_line_compares_p99_latencies_with_the_goal_and_late_starts() -> None:
    paced_put, paced_get = (w for w in workloads() if w.rate)
    cells = [
        _cell(paced_put.name, "direct", 0, 100, p99=2.0),
        _cell(paced_put.name, "s3orch", 0, 100, p99=6.5, late=2),
        _cell(paced_put.name, "rclone", 0, 100, p99=9.0),
        _cell(paced_get.name, "direct", 0, 100, p99=1.0),
        _cell(paced_get.name, "s3orch", 0, 100, p99=4.0),
        _cell(paced_get.name, "rclone", 0, 100, p99=2.0),
    ]
    put_line, get_line = summary_lines(summarize([paced_put, paced_get], cells))
    assert put_line.startswith("PUT 1KiB @100/s: p99 direct 2.00 ms, s3orch 6.50 ms, rclone 9.00 ms")
    assert "s3orch <= rclone" in put_line and "goal p99 <= 7 ms: met" in put_line
    assert "2 late starts" in put_line
    assert "s3orch ABOVE rclone" in get_line and "goal p99 <= 3 ms: MISSED" in get_line
    assert "late" not in get_line


def test_table_has_the_peer_line_with_its_ratio_and_a_cpu_column_for_it() -> None:
    (put,) = _every("put-4k-c1")
    cells = [_cell(put.name, "direct", 0, 1000), _cell(put.name, "s3orch", 0, 500), _cell(put.name, "rclone", 0, 250)]
    for c in cells:
        c.cpu = {"client": 1.0, "s3orch": 2.0, "rclone": 3.0, "weed": 4.0, "other": 5.0}
    lines = format_table(summarize([put], cells)).splitlines()
    assert "client/s3orch/rclone/weed/other" in lines[0]
    rclone = lines[-1]
    assert rclone.split()[0] == "rclone" and "0.25x (0.25..0.25)" in rclone and "1/2/3/4/5" in rclone


# --- the rclone union -----------------------------------------------------------------------

UPSTREAMS = [Upstream(f"weed{n}", f"http://127.0.0.1:{8000 + n}", f"ak{n}", f"sk{n}") for n in (1, 2, 3)]


def test_rclone_config_has_an_s3_remote_per_backend_and_a_union_over_them_in_order() -> None:
    parsed = configparser.ConfigParser()
    parsed.read_string(render_rclone_config(UPSTREAMS))
    assert parsed.sections() == ["weed1", "weed2", "weed3", UNION]
    for n in (1, 2, 3):
        remote = parsed[f"weed{n}"]
        assert remote["type"] == "s3" and remote["provider"] == "SeaweedFS"
        assert remote["endpoint"] == f"http://127.0.0.1:{8000 + n}"
        assert (remote["access_key_id"], remote["secret_access_key"]) == (f"ak{n}", f"sk{n}")
        assert remote["force_path_style"] == "true" and remote["env_auth"] == "false"
    union = parsed[UNION]
    assert union["type"] == "union"
    assert union["upstreams"].split() == ["weed1:", "weed2:", "weed3:"]
    # pack routing's nearest rclone policies: create on the first upstream, read the first found.
    assert (union["create_policy"], union["search_policy"], union["action_policy"]) == ("ff", "ff", "epall")


@pytest.mark.parametrize(
    "upstreams",
    [[], [UPSTREAMS[0], UPSTREAMS[0]], [Upstream(UNION, "http://127.0.0.1:1", "a", "b")]],
)
def test_rclone_config_refuses_no_duplicate_or_clashing_upstreams(upstreams: list[Upstream]) -> None:
    with pytest.raises(ValueError):
        render_rclone_config(upstreams)


def test_rclone_serves_the_union_on_loopback_with_its_own_keys() -> None:
    command = serve_command("/bin/rclone", Path("/w/rclone.conf"), 9999, "key", "secret")
    assert command[:4] == ["/bin/rclone", "serve", "s3", f"{UNION}:"]
    assert command[command.index("--addr") + 1] == "127.0.0.1:9999"
    assert command[command.index("--auth-key") + 1] == "key,secret"
    assert command[command.index("--config") + 1] == "/w/rclone.conf"


# --- open-loop pacing -----------------------------------------------------------------------


def test_schedule_is_evenly_spaced_at_the_rate() -> None:
    offsets = schedule(100, 2.0)
    assert len(offsets) == 200
    assert offsets[0] == 0 and offsets[-1] == pytest.approx(1.99)
    assert all(b - a == pytest.approx(0.01) for a, b in zip(offsets, offsets[1:]))
    assert schedule(100, 0.001) == [0.0]


@pytest.mark.parametrize(("rate", "duration"), [(0, 1), (-1, 1), (100, 0)])
def test_schedule_refuses_non_positive_rate_or_duration(rate: float, duration: float) -> None:
    with pytest.raises(ValueError):
        schedule(rate, duration)


class FakeClock:
    """Virtual time: sleep advances it (by ``overshoot`` more than asked: a busy client)."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 1000.0
        self.overshoot = overshoot

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.overshoot
        await asyncio.sleep(0)


def test_requests_start_on_schedule_and_a_slow_answer_does_not_hold_back_the_next() -> None:
    clock = FakeClock()
    started: dict[int, float] = {}
    release = asyncio.Event

    async def scenario() -> PacedOutcome:
        gate = release()

        async def request(index: int) -> bool:
            started[index] = clock() - 1000.0
            if index == 0:
                await gate.wait()  # the first answer is stuck until the fourth request starts
            if index == 3:
                clock.now += 0.5  # ... and comes 0.5 s later
                gate.set()
            return True

        return await run_paced(schedule(10, 0.4), request, clock, clock.sleep)

    outcome = asyncio.run(scenario())
    assert started == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3})
    assert outcome.late == 0
    latencies = sorted(outcome.latencies)
    # request 0 was due at 0 and answered at 0.8 s: its latency runs from its due time
    assert latencies[-1] == pytest.approx(0.8)
    assert outcome.max_in_flight >= 2


def test_late_starts_are_counted_and_their_lag_is_in_the_latency() -> None:
    clock = FakeClock(overshoot=0.02)

    async def request(index: int) -> bool:
        return True

    outcome = asyncio.run(run_paced(schedule(10, 0.3), request, clock, clock.sleep))
    # the first start is on time (no sleep), the next two come 20 ms late
    assert outcome.late == 2 and 0.02 > LATE_SLACK
    assert outcome.max_lag == pytest.approx(0.02)
    assert sorted(outcome.latencies) == pytest.approx([0.0, 0.02, 0.02])


def test_failed_requests_have_no_latency() -> None:
    clock = FakeClock()

    async def request(index: int) -> bool:
        return index % 2 == 0

    outcome = asyncio.run(run_paced(schedule(10, 0.5), request, clock, clock.sleep))
    assert len(outcome.latencies) == 3


# --- rows, scenarios, options ---------------------------------------------------------------


def test_paced_rows_are_1k_puts_and_gets_at_100_per_second_with_their_own_objects() -> None:
    paced = [w for w in workloads() if w.rate]
    assert [(w.op, w.size, w.rate) for w in paced] == [("put", 1024, 100.0), ("get", 1024, 100.0)]
    assert not any(w.large for w in paced)
    assert _read_key(5, 1024) != _read_key(5) and _read_key(5, 1024).startswith("obj-1KiB/")
    assert small_body(1024) == small_body(4096)[:1024] and len(small_body(4096)) == 4096
    with pytest.raises(ValueError):
        small_body(4097)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, []),
        ("", []),
        ("list", []),
        ("rss", []),
        ("list-1m", ["list-1m"]),
        ("rss-16x,get-4k-c1", ["rss-16x"]),
        ("*", ["rss-16x", "list-1m"]),
    ],
)
def test_heavy_scenarios_run_only_when_named(pattern: str | None, expected: list[str]) -> None:
    assert select_scenarios(pattern) == expected


def test_naming_a_scenario_selects_no_table_row() -> None:
    assert select_workloads(workloads(), "list-1m") == []
    assert [w.name for w in select_workloads(workloads(), "list")] == ["list-c1", "list-c16"]


def test_options_default_and_quick_sizes() -> None:
    full, quick = parse_args([]), parse_args(["--quick"])
    assert (full.large_size, full.paced_duration, full.rss_size, full.list_keys) == (64 * MiB, 3.0, 1024 * MiB, 1_000_000)
    # three targets in ~5 minutes: 2 s per small cell (3 rounds), 3 s per paced cell.
    assert (full.rounds, full.duration, quick.rounds, quick.duration) == (3, 2.0, 1, 0.5)
    assert (quick.large_size, quick.paced_duration, quick.rss_size) == (16 * MiB, 1.0, 64 * MiB)
    assert parse_args(["--rss-mib", "8", "--list-keys", "10"]).rss_size == 8 * MiB
    with pytest.raises(SystemExit):
        parse_args(["--paced-seconds", "0"])


def test_rss_line_gives_the_peak_its_source_and_the_goal() -> None:
    figures = {
        "size": 1024 * MiB, "uploads": 8, "downloads": 8, "mib_per_s": 321.0,
        "rss_before_bytes": 60 * MiB, "peak_rss_bytes": 90 * MiB, "hwm_reset": True,
    }  # fmt: skip
    line = format_rss_line(figures)
    assert line.startswith("RSS 16 x 1024MiB (8 up, 8 down): s3orch peak 90 MiB = 94 MB (VmHWM; 60 MiB before)")
    assert line.endswith("goal <= 100 MB: met")
    over = format_rss_line({**figures, "peak_rss_bytes": 101 * 1000 * 1000, "hwm_reset": False})
    assert "sampled VmRSS" in over and over.endswith("MISSED")
    assert "unknown" in format_rss_line({**figures, "peak_rss_bytes": None})


def test_list_line_judges_the_median_against_the_goal() -> None:
    figures = {"keys": 1_000_000, "page": 1000, "repeats": 50, "fill_seconds": 12.3,
               "cold_ms": 40.0, "p50_ms": 12.0, "p99_ms": 25.0}  # fmt: skip
    line = format_list_line(figures)
    assert line.startswith("LIST first page (1000 of 1000000 keys): s3orch p50 12.0 ms, p99 25.0 ms over 50")
    assert line.endswith(f"goal p50 <= {LIST_GOAL_MS:g} ms: met")
    assert format_list_line({**figures, "p50_ms": 21.0}).endswith("MISSED")
    assert format_list_line({**figures, "p50_ms": None}).endswith("no successful request")
    assert not math.isnan(LIST_GOAL_MS)


# --- the million-key builder ----------------------------------------------------------------


def test_batches_cover_the_range_in_order() -> None:
    assert [(r.start, r.stop) for r in batches(45, 20)] == [(0, 20), (20, 40), (40, 45)]
    assert list(batches(0, 20)) == []
    with pytest.raises(ValueError):
        list(batches(5, 0))


def _gateway_schema(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    for migration in discover(sql_dir("sqlite")):
        conn.executescript(migration.sql())
    conn.execute("INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES ('weed1', 0, 0)")
    conn.commit()
    return conn


def test_fill_bucket_writes_ordered_objects_with_locations_and_usage_once(tmp_path: Path) -> None:
    db = tmp_path / "s3orch.db"
    conn = _gateway_schema(db)
    assert fill_bucket(db, "big", 2500, "weed1", now=5.0) == 2500
    assert fill_bucket(db, "big", 2500, "weed1", now=6.0) == 0  # a rerun adds nothing
    first = [r[0] for r in conn.execute("SELECT object_key FROM objects WHERE bucket = 'big' ORDER BY object_key LIMIT 3")]
    assert first == [key_name(0), key_name(1), key_name(2)]
    assert key_name(999_999) < key_name(1_000_000)  # zero-padded: key order is index order
    assert conn.execute("SELECT count(*) FROM object_locations WHERE bucket = 'big' AND backend_name = 'weed1'").fetchone() == (2500,)
    assert conn.execute("SELECT bytes_used, object_count FROM backend_quotas").fetchone() == (2500 * 1024, 2500)
