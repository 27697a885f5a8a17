"""The one reserve-then-write loop: undo on failure, next backend, 507 vs 503."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from s3orch.backend.interface import BackendUnavailable
from s3orch.core.failover import with_failover
from s3orch.s3 import errors


class FailoverTests(SynchronousTestCase):
    def _write(self, failing: set[str], room: list[str]) -> tuple[object, list[str], list[str]]:
        reserved: list[str] = []
        undone: list[str] = []

        async def reserve(names: list[str]) -> str | None:
            choice = next((n for n in names if n in room), None)
            if choice is not None:
                reserved.append(choice)
            return choice

        async def attempt(name: str) -> str:
            if name in failing:
                raise BackendUnavailable("down")
            return "etag-" + name

        async def undo(name: str, exc: BaseException) -> None:
            undone.append(name)

        d = Deferred.fromCoroutine(
            with_failover(
                operation="PUT",
                candidates=lambda failed: [n for n in ("a", "b", "c") if n not in failed],
                reserve=reserve,
                backend_of=lambda name: name,
                attempt=attempt,
                undo=undo,
            )
        )
        return d, reserved, undone

    def test_failed_backend_is_undone_and_the_next_is_tried(self) -> None:
        d, reserved, undone = self._write(failing={"a"}, room=["a", "b", "c"])
        self.assertEqual(self.successResultOf(d), ("b", "etag-b"))
        self.assertEqual((reserved, undone), (["a", "b"], ["a"]))

    def test_no_room_anywhere_is_insufficient_storage(self) -> None:
        d, reserved, undone = self._write(failing=set(), room=[])
        self.failureResultOf(d, errors.InsufficientStorage)
        self.assertEqual((reserved, undone), ([], []))

    def test_room_but_every_backend_failing_is_service_unavailable(self) -> None:
        d, reserved, undone = self._write(failing={"a", "b", "c"}, room=["a", "b", "c"])
        self.failureResultOf(d, errors.ServiceUnavailable)
        self.assertEqual(undone, ["a", "b", "c"])  # every reservation given back

    def test_unexpected_error_undoes_and_propagates(self) -> None:
        undone: list[str] = []

        async def boom(name: str) -> str:
            raise ValueError("bug")

        async def undo(name: str, exc: BaseException) -> None:
            undone.append(f"{name}: {exc}")  # undo is told why (an answer, or none)

        d = Deferred.fromCoroutine(
            with_failover(
                operation="PUT",
                candidates=lambda failed: ["a"],
                reserve=lambda names: succeed("a"),
                backend_of=lambda name: name,
                attempt=boom,
                undo=undo,
            )
        )
        self.failureResultOf(d, ValueError)
        self.assertEqual(undone, ["a: bug"])
