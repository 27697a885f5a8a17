"""The rebalancer's plans as pure functions (s3orch.core.rebalance_plan): pack, spread,
threshold arithmetic, oversized copies, batch limits, never two copies on one backend."""

from __future__ import annotations

from collections.abc import Sequence

from s3orch.core.rebalance_plan import Fill, Move, plan_pack, plan_spread, spread_of
from s3orch.store.records import Location, UnderReplicated


def extent(key: str, size: int, *holders: str) -> UnderReplicated:
    copies = tuple(Location(b, f"{key}@{b}", size) for b in holders)
    return UnderReplicated("bkt", key, f"w-{key}", 0, size, "", copies)


def anywhere(size: int, holders: Sequence[str]) -> Sequence[str]:
    return ["a", "b", "c"]


def candidates(*extents: UnderReplicated) -> dict[str, list[UnderReplicated]]:
    """Per backend, its extents smallest first (what the store gives a plan)."""
    out: dict[str, list[UnderReplicated]] = {}
    for e in sorted(extents, key=lambda e: (e.size, e.key)):
        for copy in e.copies:
            out.setdefault(copy.backend, []).append(e)
    return out


def moved(moves: list[Move]) -> list[tuple[str, str, str]]:
    return [(m.extent.key, m.source.backend, m.target) for m in moves]


def apply(fills: list[Fill], moves: list[Move], extents: dict[str, UnderReplicated]) -> None:
    """The plan carried out: the extents' copies follow (the fills already did)."""
    for m in moves:
        e = extents[m.extent.key]
        copies = tuple(Location(m.target, c.storage_key, c.size) if c.backend == m.source.backend else c
                       for c in e.copies)
        extents[m.extent.key] = UnderReplicated(e.bucket, e.key, e.write_id, 0, e.size, "", copies)


def test_spread_is_max_minus_min_utilisation() -> None:
    assert spread_of([Fill("a", 100, 80), Fill("b", 200, 40), Fill("c", 10, 5)]) == 0.8 - 0.2
    assert spread_of([Fill("a", 100, 80)]) == 0.0


def test_pack_moves_copies_from_later_backends_to_the_first_with_room() -> None:
    fills = [Fill("a", 100, 60), Fill("b", 100, 30), Fill("c", 100, 25)]
    es = [extent("c1", 10, "c"), extent("c2", 15, "c"), extent("b1", 30, "b")]
    moves = plan_pack(fills, candidates(*es), anywhere, 100)
    # The last backend gives first, smallest first, into the first with room; b's copy then
    # does not fit in a (15 bytes left) and stays.
    assert moved(moves) == [("c1", "c", "a"), ("c2", "c", "a")]
    assert [f.occupied for f in fills] == [85, 30, 0]


def test_pack_never_moves_into_a_full_backend_nor_from_earlier_to_later() -> None:
    fills = [Fill("a", 100, 100), Fill("b", 100, 10)]
    assert plan_pack(fills, candidates(extent("x", 5, "b")), anywhere, 100) == []
    fills = [Fill("a", 100, 10), Fill("b", 100, 90)]
    # a's copy never moves to b (later in the order) although b is fuller.
    assert moved(plan_pack(fills, candidates(extent("x", 5, "a")), anywhere, 100)) == []


def test_pack_is_stable_across_cycles() -> None:
    es = {f"k{i}": extent(f"k{i}", 7 + i, "b" if i % 2 else "c") for i in range(10)}
    fills = [Fill("a", 60, 0), Fill("b", 200, sum(e.size for e in es.values() if e.copies[0].backend == "b")),
             Fill("c", 200, sum(e.size for e in es.values() if e.copies[0].backend == "c"))]
    first = plan_pack(fills, candidates(*es.values()), anywhere, 100)
    assert first and sum(m.size for m in first) <= 60
    apply(fills, first, es)
    assert plan_pack(fills, candidates(*es.values()), anywhere, 100) == []


def test_spread_evens_utilisation_smallest_first_and_does_not_oscillate() -> None:
    es = {f"k{i}": extent(f"k{i}", 10, "a") for i in range(9)}
    fills = [Fill("a", 100, 90), Fill("b", 100, 0), Fill("c", 100, 0)]
    first = plan_spread(fills, candidates(*es.values()), anywhere, 100)
    assert len(first) == 6 and {m.target for m in first} == {"b", "c"}
    assert [f.occupied for f in fills] == [30, 30, 30]
    apply(fills, first, es)
    assert plan_spread(fills, candidates(*es.values()), anywhere, 100) == []  # stable: nothing to undo


def test_spread_takes_the_smallest_copies_first() -> None:
    es = [extent("big", 40, "a"), extent("small", 5, "a"), extent("mid", 20, "a")]
    fills = [Fill("a", 100, 65), Fill("b", 100, 0)]
    moves = plan_spread(fills, candidates(*es), anywhere, 1)
    assert moved(moves) == [("small", "a", "b")]


def test_spread_is_a_no_op_when_balanced() -> None:
    fills = [Fill("a", 100, 50), Fill("b", 200, 100)]
    assert plan_spread(fills, candidates(extent("x", 10, "a"), extent("y", 10, "b")), anywhere, 100) == []


def test_oversized_copies_are_skipped_and_smaller_ones_still_move() -> None:
    es = [extent("huge", 80, "a"), extent("ok", 10, "a")]
    fills = [Fill("a", 100, 90), Fill("b", 50, 0)]
    assert moved(plan_spread(fills, candidates(*es), anywhere, 100)) == [("ok", "a", "b")]


def test_max_object_size_and_breakers_come_from_allowed() -> None:
    es = [extent("x", 10, "a")]
    fills = [Fill("a", 100, 90), Fill("b", 100, 0)]
    assert plan_spread(fills, candidates(*es), lambda size, holders: ["a"], 100) == []
    fills = [Fill("a", 100, 10), Fill("b", 100, 90)]
    assert plan_pack(fills, candidates(extent("y", 10, "b")), lambda size, holders: ["b"], 100) == []


def test_batch_size_limits_the_plan() -> None:
    es = [extent(f"k{i}", 1, "a") for i in range(20)]
    fills = [Fill("a", 100, 20), Fill("b", 100, 0)]
    assert len(plan_spread(fills, candidates(*es), anywhere, 3)) == 3
    fills = [Fill("b", 100, 0), Fill("a", 100, 20)]
    assert len(plan_pack(fills, candidates(*es), anywhere, 4)) == 4


def test_a_backend_holding_a_copy_is_never_a_target() -> None:
    es = [extent("r", 10, "a", "b"), extent("s", 10, "a")]
    fills = [Fill("a", 100, 90), Fill("b", 100, 10), Fill("c", 100, 80)]
    moves = plan_spread(fills, candidates(*es), anywhere, 100)
    assert all(not (m.extent.key == "r" and m.target == "b") for m in moves)
    for m in moves:
        assert m.target not in {c.backend for c in m.extent.copies}
