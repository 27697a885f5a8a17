"""What an admin handler gets and raises: the call (query, JSON body, request id, progress), the
error with the status the operator reads, and the parsing of common parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s3orch.admin.ndjson import Progress, SilentProgress

#: The most items a listing returns.
MAX_LIMIT = 1000


class AdminError(Exception):
    """An answer other than 200, with the message the operator reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class AdminCall:
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""
    progress: Progress = field(default_factory=SilentProgress)
    #: The ``{name}`` segments of a templated route's path (``backends/{name}/drain``).
    path: dict[str, str] = field(default_factory=dict)


def _qualified_key(call: AdminCall) -> tuple[str, str]:
    """The ``key=bucket/key`` query parameter, split (400 when missing or malformed)."""
    qualified = call.query.get("key", "")
    if not qualified:
        raise AdminError(400, "key parameter is required")
    bucket, _, key = qualified.partition("/")
    if not bucket or not key:
        raise AdminError(400, "key must be bucket/key")
    return bucket, key


def _int(call: AdminCall, name: str, default: int, maximum: int = MAX_LIMIT) -> int:
    raw = call.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AdminError(400, f"{name} must be an integer") from None
    if value < 0:
        raise AdminError(400, f"{name} must not be negative")
    return min(value, maximum)


def _ids(call: AdminCall) -> list[int] | None:
    ids = call.body.get("ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise AdminError(400, "ids must be a list of integers")
    return ids
