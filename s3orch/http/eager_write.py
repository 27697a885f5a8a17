"""Send a message at once when nothing is queued ahead of it, instead of on the next reactor turn.

Twisted's ``FileDescriptor.write`` only buffers: it registers the socket for writability
(``epoll_ctl``), the next ``epoll_wait`` reports it writable, ``doWrite`` sends, and the
drained buffer unregisters it (``epoll_ctl`` again).  For a small message to a socket that
is almost always writable that is two ``epoll_ctl``, one ``epoll_wait`` and a reactor turn
per message.  :func:`eager_write` sends straight away (``writeSomeData``, the same
``send()`` ``doWrite`` would make) when the transport holds nothing unsent, and leaves
everything else to Twisted: bytes the socket did not take, a lost connection and any
transport that is not a plain TCP connection (TLS, test doubles) go through
``transport.write`` as before, so ordering, backpressure (producer pausing) and error
handling stay Twisted's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import tcp

__all__ = ["eager_write", "eager_write_sequence", "writes_eagerly"]


def writes_eagerly(transport: Any) -> bool:
    """Can ``transport`` send ``data`` now without passing anything it already holds?

    Only a plain (not TLS) ``twisted.internet.tcp`` connection, connected, not closing or
    aborted (an aborted socket stays open until the next reactor turn), with nothing buffered and no producer paused on its behalf.  Every attribute is read
    defensively: a Twisted that renamed one makes this False (the plain path), never wrong.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", True):
        return False
    return bool(
        getattr(transport, "connected", False)
        and not getattr(transport, "disconnecting", True)
        and not getattr(transport, "disconnected", True)
        and not getattr(transport, "_aborting", True)  # abortConnection: nothing more may leave
        and not getattr(transport, "_writeDisconnecting", True)
        and not getattr(transport, "_writeDisconnected", True)
        and not getattr(transport, "producerPaused", True)
        and getattr(transport, "dataBuffer", None) == b""
        and getattr(transport, "offset", None) == 0
        and getattr(transport, "_tempDataBuffer", None) == []
        and getattr(transport, "_tempDataLen", None) == 0
    )


def eager_write(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent in this reactor turn when the transport is idle.

    Whatever the socket does not take (the rest of a partial send, or all of it after an
    error) is handed to ``transport.write`` behind nothing else, so Twisted queues it,
    pauses producers past its high-water mark, and closes a lost connection as usual.
    """
    if not data or not writes_eagerly(transport):
        transport.write(data)
        return
    try:
        sent = transport.writeSomeData(data)
    except Exception:  # noqa: BLE001 - Twisted's own write path reports what went wrong
        sent = 0
    if isinstance(sent, BaseException) or not isinstance(sent, int) or sent <= 0:
        transport.write(data)  # EWOULDBLOCK, or lost: doWrite will see it and close
    elif sent < len(data):
        transport.write(data[sent:])


def eager_write_sequence(transport: Any, pieces: Sequence[bytes]) -> None:
    """``transport.writeSequence(pieces)``, joined and sent at once when the transport is idle."""
    if writes_eagerly(transport):
        eager_write(transport, b"".join(pieces))
    else:
        transport.writeSequence(pieces)
