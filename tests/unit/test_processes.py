"""``server.processes``: the key, the supervisor's bookkeeping, cross-process worker locks, gauges.

The supervisor runs here on a Clock with a fake ``spawnProcess`` and a recording ``kill`` (no
process is started or signalled); the worker locks are proven across a real second process,
since a POSIX record lock never excludes the process that holds it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.config import ConfigError, load_config_from_string
from s3orch.config.model import process_count
from s3orch.observe.metrics import REGISTRY
from s3orch.observe.multiproc import GAUGE_MODES, MULTIPROC_ENV
from s3orch.store.file_locks import FileWorkerLocks, lock_file_path
from s3orch.supervisor import FDS_ENV, INDEX_ENV, SUPERVISOR_ENV, Supervisor, child_sockets, inherited_fds
from tests.unit.test_config import BASE, merge

T = TypeVar("T")

# --- the key -------------------------------------------------------------------------------------


def _load(server: dict[str, Any], **extra: Any) -> Any:
    return load_config_from_string(yaml.safe_dump(merge(BASE, {"server": server, **extra})), {})


def _errors(server: dict[str, Any], **extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _load(server, **extra)
    return [str(issue) for issue in info.value.errors]


def test_processes_defaults_to_one_and_takes_an_integer_or_auto() -> None:
    assert _load({}).server.process_count == 1
    assert _load({"processes": 3}).server.process_count == 3
    assert _load({"processes": "auto"}).server.process_count == len(os.sched_getaffinity(0))
    assert process_count(" AUTO ") >= 1


@pytest.mark.parametrize("value", [0, -2, "two", "1.5", ""])
def test_processes_below_one_or_not_a_number_is_refused_naming_the_key(value: object) -> None:
    if value == "":  # an explicit empty value is the default, as for the other enumerated keys
        assert _load({"processes": value}).server.process_count == 1
        return
    errors = _errors({"processes": value})
    assert [e for e in errors if e.startswith("server.processes: must be")], errors


def test_several_processes_on_an_in_memory_sqlite_database_are_refused() -> None:
    errors = _errors({"processes": 2}, database={"driver": "sqlite", "path": ":memory:"})
    assert any("server.processes" in e and "in-memory" in e for e in errors), errors
    assert _load({"processes": 1}, database={"driver": "sqlite", "path": ":memory:"}).server.process_count == 1


def test_several_processes_with_a_per_process_object_cache_are_refused() -> None:
    errors = _errors({"processes": 2}, cache={"enabled": True})
    assert any(e.startswith("server.processes: cannot be combined with cache.enabled") for e in errors), errors


def test_the_rate_limiter_with_several_processes_warns_that_its_limit_is_per_process() -> None:
    config = _load({"processes": 2}, rate_limit={"enabled": True, "requests_per_sec": 10})
    assert [str(w) for w in config.warnings if w.path == "server.processes"] == [
        "server.processes: rate_limit buckets are per process: a client may get up to 2x requests_per_sec and burst"
    ]
    assert not [w for w in _load({"processes": 2}).warnings if w.path == "server.processes"]


# --- worker locks across processes ---------------------------------------------------------------

_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]), os.SEEK_SET)
print("held", flush=True)
sys.stdin.readline()
"""


def _now(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (the file locks answer at once)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    raise AssertionError("the coroutine waited")


def _holder(path: str, worker_id: int) -> subprocess.Popen[str]:
    """Another process that holds ``worker_id`` until its stdin closes (or it is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path, str(worker_id)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_another_process_holds_is_refused_until_that_process_dies(tmp_path: Path) -> None:
    path = lock_file_path(str(tmp_path / "s3orch.db"))
    assert path.endswith("s3orch.db.worker-locks")
    locks = FileWorkerLocks(path)
    holder = _holder(path, 1001)
    try:
        assert _now(locks.try_lock(1001)) is False  # held elsewhere
        assert _now(locks.try_lock(1002)) is True  # one byte per id: the others are free
        holder.kill()  # even kill -9: the kernel drops the dead process's locks
        holder.wait()
        assert _now(locks.try_lock(1001)) is True
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        _now(locks.close())


def test_a_lock_this_process_holds_is_refused_in_this_process_and_released_for_others(tmp_path: Path) -> None:
    path = str(tmp_path / "locks")
    locks = FileWorkerLocks(path)
    assert _now(locks.try_lock(1005)) is True
    assert _now(locks.try_lock(1005)) is False  # POSIX locks do not exclude their owner: the set does
    check = [sys.executable, "-c", _HOLDER, path, "1005"]
    refused = subprocess.run(check, input="", capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "held" not in refused.stdout  # another process cannot take it
    _now(locks.release(1005))
    taken = subprocess.run(check, input="", capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0 and taken.stdout.strip() == "held"
    _now(locks.close())
    _now(locks.close())  # twice is harmless


# --- the supervisor ------------------------------------------------------------------------------


class _Transport:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class _Reactor(Clock):
    """Clock + the spawnProcess the supervisor calls, recording each start."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str], childFDs: dict[int, Any]) -> _Transport:  # noqa: N802, N803
        pid = 50000 + len(self.spawned)
        self.spawned.append({"protocol": protocol, "args": args, "env": env, "fds": childFDs, "pid": pid})
        return _Transport(pid)


def _supervisor(
    tmp_path: Path, count: int = 2, own_dir: bool = False
) -> tuple[Supervisor, _Reactor, list[tuple[int, int]], socket.socket]:
    """``own_dir``: the supervisor makes (and removes) the metrics directory, else tmp_path's."""
    reactor = _Reactor()
    sock = socket.socket()
    kills: list[tuple[int, int]] = []
    env = {"KEEP": "1"} if own_dir else {"KEEP": "1", MULTIPROC_ENV: str(tmp_path)}
    supervisor = Supervisor(
        reactor, count, ["python", "-c", "twistd"], {"s3": sock}, env=env, kill=lambda pid, sig: kills.append((pid, sig))
    )
    return supervisor, reactor, kills, sock


def _end(reactor: _Reactor, index: int, signum: int | None = 9) -> None:
    reactor.spawned[index]["protocol"].processEnded(Failure(ProcessTerminated(None, signum, None)))


def test_children_get_the_socket_their_number_the_parent_and_one_metrics_directory(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"a previous group's")
    supervisor, reactor, _, sock = _supervisor(tmp_path)
    supervisor.startService()
    assert len(reactor.spawned) == 2
    assert list(tmp_path.iterdir()) == []  # its counts are not ours
    envs = [spawn["env"] for spawn in reactor.spawned]
    assert [env[INDEX_ENV] for env in envs] == ["0", "1"]
    assert {env[SUPERVISOR_ENV] for env in envs} == {str(os.getpid())}
    assert inherited_fds(envs[0]) == {"s3": sock.fileno()}
    assert envs[0]["KEEP"] == "1" and envs[0][FDS_ENV] == f"s3={sock.fileno()}"
    assert sock.fileno() in reactor.spawned[0]["fds"] and reactor.spawned[0]["fds"][sock.fileno()] == sock.fileno()
    assert envs[0][MULTIPROC_ENV] == envs[1][MULTIPROC_ENV] == str(tmp_path)  # an operator's choice is kept
    assert inherited_fds({}) == {}


def test_each_child_gets_only_its_own_s3_socket_of_a_group_and_the_shared_metrics_one(tmp_path: Path) -> None:
    own = [socket.socket(), socket.socket()]  # bind_group's SO_REUSEPORT sockets: one per child
    metrics = socket.socket()
    sockets = {"s3": own, "metrics": metrics}
    assert child_sockets(sockets, 1) == {"s3": own[1], "metrics": metrics}
    reactor = _Reactor()
    supervisor = Supervisor(reactor, 2, ["python"], sockets, env={MULTIPROC_ENV: str(tmp_path)}, kill=lambda p, s: None)
    supervisor.startService()
    for index, spawn in enumerate(reactor.spawned):
        assert inherited_fds(spawn["env"]) == {"s3": own[index].fileno(), "metrics": metrics.fileno()}
        # Only its own descriptors are inherited: a sibling's socket is closed in the child.
        assert set(spawn["fds"]) == {0, 1, 2, own[index].fileno(), metrics.fileno()}
    reactor.advance(60)
    _end(reactor, 1)
    reactor.advance(0.5)  # the replacement of child 1 adopts child 1's socket, still open meanwhile
    assert own[1].fileno() != -1
    assert inherited_fds(reactor.spawned[2]["env"]) == {"s3": own[1].fileno(), "metrics": metrics.fileno()}
    supervisor.stopService()
    _end(reactor, 0, None)
    _end(reactor, 2, None)
    assert [sock.fileno() for sock in (*own, metrics)] == [-1, -1, -1]  # every socket closed at the end


def test_a_crashed_child_is_restarted_with_a_growing_back_off_and_the_others_left_alone(tmp_path: Path) -> None:
    supervisor, reactor, _, _ = _supervisor(tmp_path)
    supervisor.startService()
    reactor.advance(60)  # ran a while: a crash now is not a crash loop
    _end(reactor, 0)
    assert len(reactor.spawned) == 2  # not at once
    reactor.advance(0.5)
    assert len(reactor.spawned) == 3 and reactor.spawned[2]["env"][INDEX_ENV] == "0"
    assert supervisor.restarts == 1 and set(supervisor.children) == {0, 1}
    _end(reactor, 2)  # dies again at once: waits longer each time
    reactor.advance(0.5)
    assert len(reactor.spawned) == 3
    reactor.advance(0.5)
    assert len(reactor.spawned) == 4
    _end(reactor, 3)
    reactor.advance(1.9)
    assert len(reactor.spawned) == 4
    reactor.advance(0.1)
    assert len(reactor.spawned) == 5


def test_sighup_goes_to_every_child_and_stop_waits_for_all_then_cleans_up(tmp_path: Path) -> None:
    supervisor, reactor, kills, sock = _supervisor(tmp_path, own_dir=True)
    supervisor.startService()
    directory = Path(reactor.spawned[0]["env"][MULTIPROC_ENV])
    assert directory.is_dir() and directory.name.startswith("s3orch-metrics-")
    supervisor._reload()
    assert kills == [(50000, signal.SIGHUP), (50001, signal.SIGHUP)]
    kills.clear()
    stopped = supervisor.stopService()
    assert kills == [(50000, signal.SIGTERM), (50001, signal.SIGTERM)]
    done: list[object] = []
    stopped.addCallback(done.append)
    _end(reactor, 0, None)
    assert done == []  # one child still draining
    _end(reactor, 1, None)
    assert len(done) == 1
    assert len(reactor.spawned) == 2  # no restart while stopping
    assert sock.fileno() == -1 and not directory.exists()
    reactor.advance(1000)
    assert (50001, signal.SIGKILL) not in kills  # the kill timer was cancelled


def test_a_child_that_does_not_stop_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    supervisor, reactor, kills, _ = _supervisor(tmp_path)
    supervisor.startService()
    supervisor.stopService()
    _end(reactor, 0, None)
    reactor.advance(supervisor.stop_timeout)
    assert (50001, signal.SIGKILL) in kills and (50000, signal.SIGKILL) not in kills


# --- gauges across processes ---------------------------------------------------------------------


def test_every_gauge_says_how_it_merges_across_processes() -> None:
    import importlib
    import pkgutil

    import s3orch.observe

    for module in pkgutil.iter_modules(s3orch.observe.__path__):
        if "metrics" in module.name:  # every module that defines metrics on the REGISTRY
            importlib.import_module(f"s3orch.observe.{module.name}")
    gauges = {metric.name for metric in REGISTRY.collect() if metric.type == "gauge"}
    assert gauges - set(GAUGE_MODES) == set(), "add them to s3orch.observe.multiproc.GAUGE_MODES"
    assert set(GAUGE_MODES) - gauges == set(), "GAUGE_MODES names a gauge that does not exist"
