"""The MetadataStore contract, monthly usage rows: every engine adds flushes additively.

Two instances flushing into one row add up (neither overwrites the other), periods are separate
rows, and reading a period returns only its rows.
"""

from __future__ import annotations

import pytest_twisted

from s3orch.store.interface import MetadataStore
from s3orch.store.interface_usage import UsageRow


@pytest_twisted.ensureDeferred
async def test_flushes_add_up_per_backend_and_period(store: MetadataStore) -> None:
    assert await store.get_usage("2026-12") == {}
    rows = await store.add_usage({("b1", "2026-12"): (3, 100, 10), ("b2", "2026-11"): (1, 0, 0)}, "2026-12")
    assert rows == {"b1": UsageRow("b1", "2026-12", 3, 100, 10)}
    rows = await store.add_usage({("b1", "2026-12"): (2, 1, 0), ("b2", "2026-12"): (5, 0, 7)}, "2026-12")
    assert rows == {"b1": UsageRow("b1", "2026-12", 5, 101, 10), "b2": UsageRow("b2", "2026-12", 5, 0, 7)}
    assert await store.get_usage("2026-11") == {"b2": UsageRow("b2", "2026-11", 1, 0, 0)}
    assert await store.get_usage("2026-12", "b2") == {"b2": UsageRow("b2", "2026-12", 5, 0, 7)}
    assert await store.add_usage({}, "2027-01") == {}
