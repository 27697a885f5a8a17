"""A webhook receiver for tests: a real HTTP server on a loopback port, in a thread.

It records every POST (headers and body) and answers ``status`` (204 by default;
set it to 500 to make deliveries fail).  Blocking helpers: call them from tests,
never from reactor code.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from s3orch.notify.delivery import SIGNATURE_HEADER, verify_signature
from tests.support.polling import poll


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found

    def signed_with(self, secret: str) -> bool:
        header = self.headers.get(SIGNATURE_HEADER.lower(), "")
        return verify_signature(secret, self.body, header)


class WebhookReceiver:
    """Collects POSTs on ``http://127.0.0.1:<port>/<any path>``."""

    def __init__(self, port: int = 0) -> None:
        self.status = 204
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver.status
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.deliveries.append(
                            Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                        )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def events(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def wait_for(self, event_type: str, path: str | None = None, timeout: float = 20.0, **data: Any) -> Delivery:
        """The first delivery of ``event_type`` (to ``path``) whose data has ``data``'s items."""

        def find() -> Delivery | None:
            for delivery in self.events(path):
                event = delivery.event
                if event.get("type") == event_type and all(event["data"].get(k) == v for k, v in data.items()):
                    return delivery
            return None

        found = poll(find, lambda found: found is not None, timeout)
        if found is None:
            got = [(d.path, d.event.get("type"), d.event.get("subject")) for d in self.events()]
            raise AssertionError(f"no {event_type} {data} delivered to {path}; got {got}")
        return found

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
