"""The rebalancer's plans, as pure functions: which copies to move where (no I/O).

Only backends with a ``quota_bytes`` limit take part (an unlimited backend has no
utilisation to even out), and among them only those not being drained; a backend's
fill is what it holds or will hold: used + orphaned + reserved bytes.

* **pack** fills the backends in configuration order: copies on later backends move to the
  earliest backend with room, the last backend giving first, so the free space gathers on
  the last one.  A move always raises its destination's packing ratio and only goes toward
  the front of the order, so a plan never undoes an earlier one.
* **spread** evens out utilisation: copies move from backends above the fleet's mean
  utilisation to the least utilised backend below it, smallest first, and only when the move
  lowers the sum of squared distances to the mean, so passes converge and never oscillate.

Either way a copy never goes to a backend that already holds a copy of its extent, to one
without room for it (free room, ``max_object_size``, its breaker: ``allowed``), and a plan
holds at most ``batch_size`` moves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3orch.store.records import Location, UnderReplicated

#: Which backends may take ``size`` bytes of an extent held on ``holders``.
Allowed = Callable[[int, Sequence[str]], Sequence[str]]


@dataclass
class Fill:
    """One backend's standing while a plan is made (``occupied`` follows the planned moves)."""

    name: str
    limit: int
    occupied: int

    @property
    def ratio(self) -> float:
        return self.occupied / self.limit if self.limit else 0.0

    @property
    def free(self) -> int:
        return self.limit - self.occupied


@dataclass(frozen=True)
class Move:
    """Move ``source`` (one copy of ``extent``) to ``target``."""

    extent: UnderReplicated
    source: Location
    target: str

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def name(self) -> str:
        extent = self.extent
        return f"{extent.bucket}/{extent.key}" + (f"#{extent.part_number}" if extent.part_number else "")

    def as_dict(self) -> dict[str, Any]:
        extent = self.extent
        return {
            "bucket": extent.bucket, "key": extent.key, "part_number": extent.part_number,
            "size": self.size, "from": self.source.backend, "to": self.target,
        }


def spread_of(fills: Sequence[Fill]) -> float:
    """max(utilisation) - min(utilisation) (0 with fewer than two backends)."""
    if len(fills) < 2:
        return 0.0
    ratios = [fill.ratio for fill in fills]
    return max(ratios) - min(ratios)


def _source_copy(extent: UnderReplicated, backend: str) -> Location | None:
    return next((c for c in extent.copies if c.backend == backend), None)


def _fits(target: Fill, move_size: int, extent: UnderReplicated, allowed: Allowed) -> bool:
    holders = [c.backend for c in extent.copies]
    return (
        target.name not in holders
        and move_size <= target.free
        and target.name in allowed(move_size, holders)
    )


def plan_pack(
    fills: Sequence[Fill], candidates: Mapping[str, Sequence[UnderReplicated]], allowed: Allowed, batch_size: int
) -> list[Move]:
    """The pack plan over ``fills`` (configuration order); ``candidates`` per backend, smallest first."""
    moves: list[Move] = []
    planned: set[tuple[str, str, int]] = set()
    for index, target in enumerate(fills):
        for source in reversed(fills[index + 1:]):
            for extent in candidates.get(source.name, ()):
                if len(moves) >= batch_size:
                    return moves
                ident = (extent.bucket, extent.key, extent.part_number)
                copy = _source_copy(extent, source.name)
                if ident in planned or copy is None:
                    continue
                if copy.size > target.free:
                    break  # smallest first: nothing later on this source fits either
                if not _fits(target, copy.size, extent, allowed):
                    continue
                moves.append(Move(extent, copy, target.name))
                planned.add(ident)
                target.occupied += copy.size
                source.occupied -= copy.size
    return moves


def _improves(source: Fill, target: Fill, size: int, mean: float) -> bool:
    """Whether moving ``size`` bytes lowers the sum of squared distances to the mean."""
    before = (source.ratio - mean) ** 2 + (target.ratio - mean) ** 2
    after = ((source.occupied - size) / source.limit - mean) ** 2 + ((target.occupied + size) / target.limit - mean) ** 2
    return after < before - 1e-12


def plan_spread(
    fills: Sequence[Fill], candidates: Mapping[str, Sequence[UnderReplicated]], allowed: Allowed, batch_size: int
) -> list[Move]:
    """The spread plan over ``fills``; ``candidates`` per backend, smallest first."""
    total_limit = sum(fill.limit for fill in fills)
    if len(fills) < 2 or not total_limit:
        return []
    mean = sum(fill.occupied for fill in fills) / total_limit
    moves: list[Move] = []
    planned: set[tuple[str, str, int]] = set()
    while len(moves) < batch_size:
        move = _best_spread_move(fills, candidates, allowed, mean, planned)
        if move is None:
            break
        moves.append(move)
        planned.add((move.extent.bucket, move.extent.key, move.extent.part_number))
        by_name = {fill.name: fill for fill in fills}
        by_name[move.source.backend].occupied -= move.size
        by_name[move.target].occupied += move.size
    return moves


def _best_spread_move(
    fills: Sequence[Fill],
    candidates: Mapping[str, Sequence[UnderReplicated]],
    allowed: Allowed,
    mean: float,
    planned: set[tuple[str, str, int]],
) -> Move | None:
    """The smallest movable copy on the fullest backend above the mean that can go to the
    least utilised backend below it (or the next fullest, when none of its copies can)."""
    sources = sorted((f for f in fills if f.ratio > mean), key=lambda f: (-f.ratio, f.name))
    for source in sources:
        targets = sorted((f for f in fills if f.ratio < mean), key=lambda f: (f.ratio, f.name))
        for extent in candidates.get(source.name, ()):
            copy = _source_copy(extent, source.name)
            if copy is None or (extent.bucket, extent.key, extent.part_number) in planned:
                continue
            for target in targets:
                if _fits(target, copy.size, extent, allowed) and _improves(source, target, copy.size, mean):
                    return Move(extent, copy, target.name)
    return None


PLANS: dict[str, Callable[..., list[Move]]] = {"pack": plan_pack, "spread": plan_spread}
