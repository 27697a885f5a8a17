"""How many object-body bytes a Twisted TCP transport reads, buffers and sends at a time.

Twisted's TCP transport reads at most ``bufferSize`` bytes (64 KiB) per ``recv()``, pauses
its producer once more than ``bufferSize`` bytes wait to be sent, and sends at most
``SEND_LIMIT`` (128 KiB) per ``send()``.  Relaying a 64 MiB GET with those defaults took
~1,000 backend reads, ~500 sends and ~500 pause/resume round trips (each two
``epoll_ctl`` calls, the backend socket stopped and restarted, a write-deadline stamp): about
half of the gateway's CPU per GET.  :data:`BODY_READ_SIZE` for backend connections and
:data:`RELAY_WRITE_WINDOW` for the client socket of a large response halve it; larger sizes
measured worse (Twisted joins its pending writes into one ``bytes`` before sending, and
a 1 MiB ``recv`` allocates 1 MiB each time).

Memory stays bounded: a relayed response holds at most one window plus one read in user
space.  Transports that are not Twisted file descriptors (test doubles) are left alone.
"""

from __future__ import annotations

from typing import Any

#: Bytes per ``recv()`` on a backend connection (Twisted's default: 64 KiB).
BODY_READ_SIZE = 256 * 1024
#: While a large response is relayed: bytes the client socket's user-space buffer may hold
#: before the relay (and so the backend socket) is paused, and bytes per ``send()``.
RELAY_WRITE_WINDOW = 512 * 1024
#: How many relayed responses may hold a :data:`RELAY_WRITE_WINDOW` at once (per process).
MAX_WIDE_WINDOWS = 4


def socket_transport(transport: Any) -> Any | None:
    """The Twisted file descriptor (TCP) carrying ``transport``: itself, or the transport
    under a wrapper (TLS); None when there is none (a test double)."""
    for _ in range(4):
        if transport is None:
            return None
        if isinstance(getattr(transport, "dataBuffer", None), (bytes, bytearray, memoryview)) and isinstance(
            getattr(transport, "bufferSize", None), int
        ):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def set_read_size(transport: Any, size: int = BODY_READ_SIZE) -> None:
    """Make ``transport``'s socket read up to ``size`` bytes per ``recv()`` (no-op on doubles).

    ``bufferSize`` is also the transport's write high-water mark, so it rises as well: an
    upload's producer (256 KiB reads of the payload) pauses with two reads buffered, not one."""
    sock = socket_transport(transport)
    if sock is not None and sock.bufferSize < size:
        sock.bufferSize = size


class WriteWindow:
    """Widens a client socket's write buffering for one large response, then restores it.

    The socket's ``bufferSize`` is also its ``recv()`` size, which the next request on the
    connection (an upload) must find as it was: :meth:`restore` puts both values back.

    At most :data:`MAX_WIDE_WINDOWS` responses of a process hold a wide window at once (a
    budget of a few MiB): under many concurrent large GETs the rest keep Twisted's sizes, so
    memory stays flat however many run (the RSS bench: 16 concurrent 1 GiB transfers).
    """

    __slots__ = ("_socket", "_buffer_size", "_send_limit")

    #: Wide windows held right now in this process.
    active = 0

    def __init__(self, transport: Any, window: int = RELAY_WRITE_WINDOW) -> None:
        self._socket = sock = socket_transport(transport)
        self._buffer_size = self._send_limit = 0
        if sock is None or sock.bufferSize >= window or WriteWindow.active >= MAX_WIDE_WINDOWS:
            self._socket = None
            return
        WriteWindow.active += 1
        self._buffer_size = sock.bufferSize
        self._send_limit = sock.SEND_LIMIT
        sock.bufferSize = window
        sock.SEND_LIMIT = max(self._send_limit, window)

    @property
    def widened(self) -> bool:
        return self._socket is not None

    def restore(self) -> None:
        """Back to the socket's own sizes (idempotent)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            WriteWindow.active -= 1
            sock.bufferSize = self._buffer_size
            sock.SEND_LIMIT = self._send_limit
