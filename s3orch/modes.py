"""Run modes (``twistd s3orch --mode all|api|worker``): which parts of the gateway one process runs.

* ``all`` (the default): the S3 API, the operational endpoints and every background worker;
* ``api``: the S3 API and the operational endpoints; of the workers only the usage flush (each
  instance refreshes its own gauges) and the backend-credential refresher (S3 requests sign
  with those credentials) run;
* ``worker``: the operational endpoints (``/health``, ``/metrics``) on ``server.listen_addr``
  and every background worker, no S3 API.

A worker-mode process answers S3 paths with 503 ServiceUnavailable (S3 XML), not 404: an S3
client or a sync tool reads a 404 as "no such key", while a 503 is retried elsewhere or later
and names the misrouting in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3orch.frontend.request import path_of
from s3orch.http.site import RejectedEarly, S3Request, unprepared_rejection
from s3orch.s3.errors import RequestReadTimeout, S3Error, ServiceUnavailable

MODE_ALL = "all"
MODE_API = "api"
MODE_WORKER = "worker"
MODES = (MODE_ALL, MODE_API, MODE_WORKER)

#: Workers an api-mode process still runs (by service name).
API_MODE_WORKERS = frozenset({"usage-flush", "backend-credentials", "journal-refresh"})


class InvalidMode(ValueError):
    """``--mode`` is not one of :data:`MODES`."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else InvalidMode with a one-line message."""
    if mode not in MODES:
        raise InvalidMode(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def serves_s3(mode: str) -> bool:
    return mode != MODE_WORKER


def runs_worker(mode: str, name: str) -> bool:
    """Whether a process in ``mode`` runs the background worker called ``name``."""
    return mode != MODE_API or name in API_MODE_WORKERS


NO_S3_MESSAGE = "This s3orch instance runs in worker mode and serves no S3 API."


class NoS3Service:
    """The early handler of a worker-mode listener: every S3 path is refused before its body."""

    def __init__(self, reserved_prefixes: Sequence[bytes]) -> None:
        self.reserved_prefixes = tuple(reserved_prefixes)

    def wants(self, method: bytes, uri: bytes, host: bytes | None) -> bool:
        path = path_of(uri)
        return not any(
            path == prefix or path.startswith(prefix + b"/") or path.startswith(prefix + b"?")
            for prefix in self.reserved_prefixes
        )

    def prepare(self, request: S3Request, method: bytes, uri: bytes, length: int | None) -> Any:
        raise RejectedEarly(
            503,
            [("Content-Type", "application/xml"), ("Server", "s3orch"), ("Retry-After", "5")],
            ServiceUnavailable(NO_S3_MESSAGE).to_xml(resource=path_of(uri).decode("latin-1")),
        )

    def feed(self, request: S3Request, data: bytes) -> None:
        raise AssertionError("no S3 request is ever prepared in worker mode")

    def abandoned(self, request: S3Request) -> None:
        """Nothing was prepared, so nothing to release."""

    def timed_out(self, request: S3Request | None) -> RejectedEarly:
        return unprepared_rejection(RequestReadTimeout())

    def refused(self, request: S3Request | None, exc: S3Error) -> RejectedEarly:
        """Broken framing: the same S3 XML answer the S3 service gives (nothing was prepared)."""
        return unprepared_rejection(exc)
