"""The database breaker's store proxy keeps one wrapper per method, yet always calls the
store's method as it is now (tests monkeypatch the raw store after the proxy was used)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from s3orch.config.model import CircuitBreakerConfig
from s3orch.core.degraded import DatabaseBreaker
from s3orch.store.interface import StoreUnavailable


class _Store:
    def __init__(self) -> None:
        self.started = False

    async def get_object(self, bucket: str, key: str) -> str:
        return f"{bucket}/{key}"

    def describe(self) -> str:  # not a coroutine: handed out as it is
        return "store"


@pytest_twisted.ensureDeferred
async def test_the_wrapper_is_made_once_and_follows_the_store() -> None:
    store = _Store()
    breaker = DatabaseBreaker(CircuitBreakerConfig(failure_threshold=1), Clock())
    guarded: Any = breaker.guard(store)  # type: ignore[arg-type]
    first = guarded.get_object
    assert guarded.get_object is first  # cached, no new closure per call
    assert await first("b", "k") == "b/k"
    assert guarded.describe() == "store"

    async def down(bucket: str, key: str) -> str:
        raise StoreUnavailable("gone")

    store.get_object = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await guarded.get_object("b", "k")  # the new method, through the breaker
    assert breaker.degraded()  # one outage opens a threshold-1 breaker
