"""``server.processes`` > 1: one parent holds the listening sockets and supervises N gateways.

Why a parent and inherited sockets rather than each process binding with ``SO_REUSEPORT``: the
port is claimed once (a second s3orch on the same port still fails with "Address already in
use"), and a restarted child takes the same socket without a window in which connections are
refused.  The parent does bind the S3 port with ``SO_REUSEPORT``, though: one listening socket
per child (:func:`bind_group`, each with the full backlog), child *i* handed only socket *i*, so
the kernel spreads new connections over the children by a hash of their 4-tuple instead of
letting whichever child wakes first accept a whole burst (Twisted accepts up to ~100 per wake-up)
and leave the others idle for the connections' whole life.  Both reasons still hold: before it
binds the group the parent binds the port once without ``SO_REUSEPORT``, which fails while any
listener holds it (a single s3orch, or another group; only two groups started in the same
instant could both pass it), and the parent keeps every socket open,
so while a child restarts the connections hashed to its socket queue in that socket's backlog
until the new child adopts it.  The flip side: the kernel goes on hashing connections to a
socket whose child is dead, so they wait for the restart (prompt, see below: 0.5 s, up to
:data:`MAX_BACKOFF` for a child that keeps dying at once) rather than going to a live sibling.
Where the platform has no ``SO_REUSEPORT`` the S3 socket is one socket shared by every child
(they race to accept it, as before).  The ``telemetry.metrics.listen`` socket is always one
shared socket: any child answers a scrape for the whole group, so there is nothing to spread.

The parent runs no gateway of its own: it binds the listeners, then starts each child as
``python -m twisted -n s3orch`` with the same config and mode, its sockets passed as inherited
descriptors (``spawnProcess`` with ``childFDs``) and named in :data:`FDS_ENV`; the child adopts
them (:class:`AdoptedListener`) instead of binding.  It restarts a child that exits while
the group runs (logged, with a back-off when a child keeps dying at once), passes SIGHUP to
every child (each reloads its config as a single process does) and, on SIGTERM (twistd stops
the reactor), sends SIGTERM to every child and waits until all have drained and exited.

Metrics: the children share one prometheus-client multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, :mod:`s3orch.observe.multiproc`), so whichever child answers
``/metrics`` reports the whole group.  Its files are cleaned when a child exits and the
directory is removed when the group stops (when the parent created it).
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure

from s3orch.observe.logging import PROCESS_FIELDS
from s3orch.observe.multiproc import MULTIPROC_ENV, forget_process

__all__ = [
    "FDS_ENV", "INDEX_ENV", "SUPERVISOR_ENV", "AdoptedListener", "GroupSockets", "Supervisor", "bind_group",
    "bind_listener", "child_argv", "child_sockets", "inherited_fds", "join_group", "watch_group",
]

_log = Logger(namespace="s3orch.supervisor")

#: Inherited listening sockets, ``name=fd`` pairs separated by commas (``s3=3,metrics=4``).
FDS_ENV = "S3ORCH_LISTEN_FDS"
#: This child's number in the group (0 .. N-1), for logs.
INDEX_ENV = "S3ORCH_PROCESS_INDEX"
#: The parent's pid: a child whose parent is gone stops (``s3orch.tap``).
SUPERVISOR_ENV = "S3ORCH_SUPERVISOR_PID"

#: A child that ran less than this long before exiting counts as crashing at start.
QUICK_EXIT = 5.0
MAX_BACKOFF = 30.0


def inherited_fds(env: Mapping[str, str]) -> dict[str, int]:
    """The listening sockets a supervisor handed down (empty: this process binds its own)."""
    value = env.get(FDS_ENV, "")
    pairs = (item.partition("=") for item in value.split(",") if item)
    return {name: int(fd) for name, _, fd in pairs}


#: A group's listener by name: one socket every child shares, or one socket per child (index i: child i's).
GroupSockets = Mapping[str, socket.socket | Sequence[socket.socket]]


def child_sockets(sockets: GroupSockets, index: int) -> dict[str, socket.socket]:
    """The sockets child ``index`` is handed: each shared one, and its own of each per-child list."""
    return {name: sock if isinstance(sock, socket.socket) else sock[index] for name, sock in sockets.items()}


def _every_socket(sockets: GroupSockets) -> list[socket.socket]:
    return [one for sock in sockets.values() for one in ([sock] if isinstance(sock, socket.socket) else sock)]


def _tcp_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def bind_listener(interface: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``interface:port`` (``""``: every IPv4 address), inheritable."""
    host = interface or "0.0.0.0"
    sock = _tcp_socket(host)
    sock.bind((host, port))
    return _listening(sock, backlog)


def bind_group(interface: str, port: int, count: int, backlog: int = 1024) -> socket.socket | list[socket.socket]:
    """``count`` listening sockets on ``interface:port`` in one ``SO_REUSEPORT`` group, each with
    the full backlog, one for each child (why: the module docstring); where the platform has no
    ``SO_REUSEPORT``, one socket, which the children share.

    The port is first bound without ``SO_REUSEPORT``: that fails (``OSError``, "Address already
    in use") while anything listens there, where a ``SO_REUSEPORT`` bind would join another
    group of the same user.  Port 0 picks a free port for the whole group."""
    host = interface or "0.0.0.0"
    probe = _tcp_socket(host)
    try:
        probe.bind((host, port))
        port = probe.getsockname()[1]
    finally:
        probe.close()
    option = getattr(socket, "SO_REUSEPORT", None)
    group = [_tcp_socket(host)]
    try:
        if option is not None:
            try:
                group[0].setsockopt(socket.SOL_SOCKET, option, 1)
            except OSError:  # the constant exists but this kernel refuses it
                option = None
        if option is None:  # one socket every child shares
            group[0].bind((host, port))
            return _listening(group[0], backlog)
        while len(group) < count:
            group.append(_tcp_socket(host))
            group[-1].setsockopt(socket.SOL_SOCKET, option, 1)
        for sock in group:
            sock.bind((host, port))
            _listening(sock, backlog)
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group


def _listening(sock: socket.socket, backlog: int) -> socket.socket:
    sock.listen(backlog)
    sock.set_inheritable(True)
    # Non-blocking for every process sharing it: a child's reactor accepts in a loop until
    # EAGAIN, and a blocking accept would hang that child when a sibling took the connection.
    sock.setblocking(False)
    return sock


class _Child(ProcessProtocol):
    """One child's process: says when it ended."""

    def __init__(self, on_end: Callable[[_Child, Failure], None]) -> None:
        self.on_end = on_end
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self.started = 0.0

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        self.on_end(self, reason)
        self.ended.callback(None)


class Supervisor(Service):
    """The parent of a ``server.processes`` group (see the module docstring)."""

    name = "supervisor"

    def __init__(
        self,
        reactor: Any,
        count: int,
        argv: Sequence[str],
        sockets: GroupSockets,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 120.0,
        log_observer: ILogObserver | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.log_observer = log_observer
        self.kill = kill
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        #: Name -> one socket every child shares, or ``count`` sockets (child i gets the i-th).
        self.sockets = dict(sockets)
        self.base_env = dict(os.environ if env is None else env)
        self.stop_timeout = stop_timeout
        self.children: dict[int, _Child] = {}
        self.restarts = 0
        self._backoff: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}
        self._stopping = False
        self._own_dir = False
        self.metrics_dir = self.base_env.get(MULTIPROC_ENV, "")
        self._remove_hup: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def setServiceParent(self, parent: Any) -> None:  # noqa: N802 - Twisted's name
        """twistd's application: its log is the gateways' format (``server.log_format``)."""
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        if not self.metrics_dir:
            self.metrics_dir = tempfile.mkdtemp(prefix="s3orch-metrics-")
            self._own_dir = True
        else:  # an operator's directory: a previous group's counts must not be added to ours
            for stale in glob.glob(os.path.join(self.metrics_dir, "*.db")):
                os.unlink(stale)
        _log.info(
            "supervising {count} processes on {how} (pid {pid})",
            count=self.count, pid=os.getpid(), component="supervisor",
            how="one listener" if len(_every_socket(self.sockets)) == len(self.sockets) else "a listener each",
        )
        for index in range(self.count):
            self._spawn(index)

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        self._stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits = [child.ended for child in self.children.values()]
        self.signal_all(signal.SIGTERM)
        killer = self.reactor.callLater(self.stop_timeout, self.signal_all, signal.SIGKILL)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()
            for sock in _every_socket(self.sockets):
                sock.close()
            if self._own_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            _log.info("all processes stopped", component="supervisor")

        result: Deferred[None] = DeferredList(waits).addCallback(done)
        return result

    # -- children -------------------------------------------------------------------------

    def child_env(self, index: int) -> dict[str, str]:
        env = dict(self.base_env)
        own = child_sockets(self.sockets, index)
        env[FDS_ENV] = ",".join(f"{name}={sock.fileno()}" for name, sock in own.items())
        env[INDEX_ENV] = str(index)
        env[SUPERVISOR_ENV] = str(os.getpid())
        env[MULTIPROC_ENV] = self.metrics_dir
        return env

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if self._stopping:
            return
        child = _Child(lambda proc, reason: self._ended(index, proc, reason))
        fds: dict[int, int | str] = {0: 0, 1: 1, 2: 2}
        fds.update({sock.fileno(): sock.fileno() for sock in child_sockets(self.sockets, index).values()})
        transport = self.reactor.spawnProcess(
            child, self.argv[0], self.argv, env=self.child_env(index), childFDs=fds
        )
        child.pid = transport.pid
        child.started = self.reactor.seconds()
        self.children[index] = child
        _log.info("process {index} started (pid {child})", index=index, child=child.pid, component="supervisor")

    def _ended(self, index: int, child: _Child, reason: Failure) -> None:
        if self.children.get(index) is child:
            del self.children[index]
        if child.pid is not None:
            forget_process(self.metrics_dir, child.pid)
        if self._stopping:
            return
        code = getattr(reason.value, "exitCode", None)
        signum = getattr(reason.value, "signal", None)
        quick = self.reactor.seconds() - child.started < QUICK_EXIT
        delay = min(MAX_BACKOFF, self._backoff.get(index, 0.5) * 2) if quick else 0.5
        self._backoff[index] = delay
        self.restarts += 1
        _log.error(
            "process {index} (pid {child}) exited (code {code}, signal {signum}); restarting in {delay}s",
            index=index, child=child.pid, code=code, signum=signum, delay=delay, component="supervisor",
        )
        self._pending[index] = self.reactor.callLater(delay, self._spawn, index)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every running child (SIGHUP: reload; SIGTERM: graceful stop)."""
        for child in list(self.children.values()):
            if child.pid is None:
                continue
            try:
                self.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    def forward_sighup(self) -> Callable[[], None]:
        """Install the parent's SIGHUP handler (pass it on to the group); returns its remover."""

        def on_hup(signum: int, frame: object) -> None:
            self.reactor.callFromThread(self._reload)

        previous = signal.signal(signal.SIGHUP, on_hup)

        def remove() -> None:
            signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)

        return remove

    def _reload(self) -> None:
        _log.info("SIGHUP: reloading {count} processes", count=len(self.children), component="supervisor")
        self.signal_all(signal.SIGHUP)


class AdoptedListener(Service):
    """A listener on a socket the supervisor bound: adopted at start, stopped like a TCPServer."""

    def __init__(self, fd: int, factory: Any, reactor: Any) -> None:
        self.fd = fd
        self.factory = factory
        self.reactor = reactor
        self._port: Any = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        probe = socket.socket(fileno=self.fd)
        family = probe.family
        probe.detach()  # the descriptor stays open: adoptStreamPort duplicates it
        self._port = self.reactor.adoptStreamPort(self.fd, family, self.factory)

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is unannotated
        port, self._port = self._port, None
        if port is None:
            return None
        result: Deferred[None] | None = port.stopListening()
        return result


def join_group(reactor: Any, env: Mapping[str, str]) -> dict[str, int]:
    """In a child of a group: log lines carry its pid and number, it stops with the supervisor,
    and it serves the sockets the supervisor handed down (returned; empty outside a group)."""
    if SUPERVISOR_ENV not in env:
        return {}
    PROCESS_FIELDS.update(pid=os.getpid(), process=int(env.get(INDEX_ENV, "0")))
    # A process group of its own: a terminal's Ctrl-C (or a signal to the supervisor's group)
    # reaches the supervisor only, which stops the children once, in order.
    os.setpgid(0, 0)
    watch = watch_group(reactor, int(env[SUPERVISOR_ENV]))
    reactor.callWhenRunning(watch.start, 1.0, False)
    return inherited_fds(env)


def watch_group(reactor: Any, supervisor_pid: int) -> Any:
    """In a child: sample the function gauges each second, and stop if the supervisor is gone
    (``kill -9`` of the parent must not leave orphans serving); returns the LoopingCall."""
    from twisted.internet.task import LoopingCall

    from s3orch.observe.multiproc import sample_functions

    def tick() -> None:
        sample_functions()
        if os.getppid() != supervisor_pid and reactor.running:
            _log.error("the supervisor (pid {pid}) is gone: stopping", pid=supervisor_pid, component="supervisor")
            reactor.stop()

    loop = LoopingCall(tick)
    loop.clock = reactor
    return loop


def child_argv(config_path: str, mode: str) -> list[str]:
    """The command line of one child: this interpreter's twistd, in the foreground, no pidfile."""
    twistd = "from twisted.scripts.twistd import run; run()"
    return [sys.executable, "-c", twistd, "-n", "--pidfile=", "s3orch", "--config", config_path, "--mode", mode]
