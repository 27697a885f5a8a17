"""A small synchronous client of the admin API for ``s3orch-admin`` (http.client, no new deps).

The timeout is per read, not per call: a streamed pass (NDJSON) may run for hours and
never times out while its progress lines keep coming, yet a silent server is noticed within
``timeout`` seconds.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from s3orch.admin.ndjson import NDJSON
from s3orch.admin.routes import PREFIX


class ConnectionProblem(Exception):
    """The gateway could not be reached or did not answer in time (exit status 2)."""


class OperationFailed(Exception):
    """The gateway answered with an error (exit status 1)."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id = request_id


def listen_to_url(listen_addr: str, tls: bool) -> str:
    """``server.listen_addr`` as the URL a local client reaches it at (a wildcard is localhost)."""
    host, _, port = listen_addr.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def normalise_addr(addr: str, tls: bool = False) -> str:
    """``host:port`` or a URL: a URL (``http://`` added unless ``tls``)."""
    if "://" in addr:
        return addr.rstrip("/")
    return f"{'https' if tls else 'http'}://{addr}".rstrip("/")


class AdminClient:
    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionProblem(f"not an http(s) address: {base_url!r}")
        self.base_url = base_url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.token = token
        self.timeout = timeout
        self.context = context

    def _connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _send(
        self, method: str, path: str, query: Mapping[str, Any] | None, body: Mapping[str, Any] | None, accept: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        target = PREFIX + path
        wanted = {k: v for k, v in (query or {}).items() if v is not None}
        if wanted:
            target += "?" + urlencode(wanted)
        payload = json.dumps(body).encode() if body is not None else b""
        headers = {"X-Admin-Token": self.token, "Accept": accept, "Content-Length": str(len(payload))}
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection = self._connection()
        try:
            connection.request(method, target, body=payload, headers=headers)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            connection.close()
            raise ConnectionProblem(f"cannot reach {self.base_url}: {_reason(exc)}") from None

    def call(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One JSON answer; OperationFailed for a non-2xx status."""
        connection, response = self._send(method, path, query, body, "application/json")
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionProblem(f"{self.base_url} stopped answering: {_reason(exc)}") from None
        finally:
            connection.close()
        return _answer(response.status, raw)

    def stream(
        self,
        method: str,
        path: str,
        on_event: Callable[[dict[str, Any]], None],
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a streamed pass: ``on_event`` gets every progress event; returns the result."""
        connection, response = self._send(method, path, query, body, NDJSON)
        try:
            if response.status != 200 or NDJSON not in (response.getheader("content-type") or ""):
                return _answer(response.status, response.read())
            result: dict[str, Any] | None = None
            while True:
                line = response.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "result":
                    result = event
                elif event.get("type") == "error":
                    raise OperationFailed(int(event.get("status", 500)), str(event.get("error")), event.get("request_id"))
                else:
                    on_event(event)
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionProblem(f"{self.base_url} stopped answering: {_reason(exc)}") from None
        except ValueError:
            raise ConnectionProblem(f"{self.base_url} sent something that is not NDJSON") from None
        finally:
            connection.close()
        if result is None:
            raise ConnectionProblem(f"{self.base_url} ended the stream without a result")
        result.pop("type", None)
        result.pop("at", None)
        return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _answer(status: int, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        data = {"error": raw.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"}
    if not isinstance(data, dict):
        data = {"value": data}
    if not 200 <= status < 300:
        raise OperationFailed(status, str(data.get("error") or f"HTTP {status}"), data.get("request_id"))
    return data
