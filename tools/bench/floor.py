"""The bench's floor: a bare twisted.web server that does no work at all.

s3orch's front door is twisted.web on one CPython reactor; no gateway built on it can answer
faster than this server, which parses the request with the same ``Site`` and answers with a
fixed body: no auth, no store, no backend, no access log.  ``make bench`` measures it in the
same rounds as the HEAD/GET 4 KiB rows (target ``floor``), so a row where even the floor is
slower than the peer shows a limit of the architecture, not of s3orch's code.

Any path: GET answers 200 with the body file's bytes (the bench's 4 KiB object, so its GET
check passes), HEAD 200 with the same Content-Length and no body; other methods are refused
(Twisted's default 501).  Run by tools/bench/environment.py as
``python -P tools/bench/floor.py --port N --body FILE`` (``-P``: nothing from tools/bench
shadows a library module), so it imports Twisted only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.web import resource, server


class FixedBody(resource.Resource):
    """Every path is this one leaf: the fixed body, nothing looked up."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's Resource is unannotated
        self.body = body
        self.length = b"%d" % len(body)

    def render_GET(self, request: server.Request) -> bytes:
        return self.body

    def render_HEAD(self, request: server.Request) -> bytes:
        # Returning the body would make Twisted log a warning per HEAD before dropping it.
        request.setHeader(b"content-length", self.length)
        return b""


class QuietSite(server.Site):
    """A ``Site`` without the combined access log (s3orch's is off too)."""

    displayTracebacks = False

    def log(self, request: Any) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a bare twisted.web server: the bench's floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="file whose bytes every GET answers")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    site = QuietSite(FixedBody(args.body.read_bytes()))  # type: ignore[no-untyped-call]  # Site is unannotated
    reactor.listenTCP(args.port, site, interface="127.0.0.1")  # type: ignore[arg-type]  # a Site is a ServerFactory
    reactor.run()


if __name__ == "__main__":
    main()
