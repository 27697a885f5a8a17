"""Structured logging: twisted.logger events rendered as one line each, JSON or text.

Every long-lived component logs through ``Logger(namespace=...)`` with a
``component`` field; the observer turns each event into JSON with ``time``,
``level``, ``component``, ``msg`` and the event's keyword fields
(``server.log_format: json``, the default), or into a text line carrying the
same fields as ``key=value`` pairs (``text``).  A line written inside a trace span carries its
``trace_id`` and ``span_id``.  Fields whose names look like
secrets are dropped, so a careless log call cannot leak one.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

from s3orch.observe.ring import LogRing
from s3orch.observe.tracing import log_ids

_SECRET_FIELD = re.compile(r"secret|password|token|signature|authorization|credential|master_key", re.I)
_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}
_LEVEL_NAMES = {
    LogLevel.debug: "DEBUG",
    LogLevel.info: "INFO",
    LogLevel.warn: "WARN",
    LogLevel.error: "ERROR",
    LogLevel.critical: "ERROR",
}
#: Keys twisted.logger adds to every event; not part of our JSON.
_INTERNAL = {"log_logger", "log_level", "log_namespace", "log_source", "log_format", "log_time",
             "log_failure", "log_system", "log_text", "log_io", "log_legacy", "log_trace",
             "format", "message", "isError", "system", "time", "why", "failure"}


def level_from_name(name: str) -> LogLevel:
    level: LogLevel = _LEVELS.get(name.lower(), LogLevel.info)
    return level


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


#: Fields every line of this process carries: ``pid`` and ``process`` (its number) in a
#: ``server.processes`` group, where several processes write one log (set by ``s3orch.tap``).
PROCESS_FIELDS: dict[str, int] = {}

#: The last whole second formatted by :func:`_format_time`, and its text (one strftime a second).
_last_second: tuple[int, str] = (-1, "")
#: Whether each event key is one of ours to copy: not Twisted's, not secret-looking (keys are
#: a small, closed set of names in the code, so one lookup replaces three checks per key).
_copied_keys: dict[str, bool] = {}
_COPIED_KEYS_MAX = 4096
#: Values written as they are (everything else goes through :func:`_jsonable`).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _format_time(event: dict[str, Any]) -> str:
    """``log_time`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; the seconds part is cached, as a
    busy gateway writes thousands of lines within one second."""
    global _last_second
    when = event.get("log_time")
    seconds = int(when) if when is not None else int(time.time())
    cached = _last_second
    if cached[0] == seconds:
        text = cached[1]
    else:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    return text + ".%03dZ" % int(((when or 0) % 1) * 1000)


def _copied(key: str) -> bool:
    known = _copied_keys.get(key)
    if known is None:
        known = not (key in _INTERNAL or key.startswith("log_") or _SECRET_FIELD.search(key))
        if len(_copied_keys) < _COPIED_KEYS_MAX:
            _copied_keys[key] = known
    return known


#: The keys to copy of each event shape (its keys in order -> those :func:`_copied` keeps): a
#: call site emits the same shape every time, so one tuple and one lookup replace a call per key.
_shape_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHAPES_MAX = 1024


def _keys_to_copy(event: dict[str, Any]) -> tuple[str, ...]:
    shape = tuple(event)
    keys = _shape_keys.get(shape)
    if keys is None:
        keys = tuple(key for key in shape if _copied(key))
        if len(_shape_keys) < _SHAPES_MAX:
            _shape_keys[shape] = keys
    return keys


def _message(event: dict[str, Any]) -> str:
    """The event's formatted message; a format without fields is its own message (Twisted's
    formatter parses it either way, a good part of the cost of an audit line)."""
    fmt = event.get("log_format")
    if type(fmt) is str and "{" not in fmt and "}" not in fmt and "log_flattened" not in event:
        return fmt
    return formatEvent(event)


def event_to_dict(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of one log event (the text form carries the same fields)."""
    level = event.get("log_level", LogLevel.info)
    out: dict[str, Any] = {
        "time": _format_time(event),
        "level": _LEVEL_NAMES.get(level, "INFO"),
    }
    component = event.get("component") or event.get("log_namespace") or "s3orch"
    out["component"] = component
    out.update(PROCESS_FIELDS)
    if event.get("log_format") is not None or "log_io" in event:
        out["msg"] = _message(event)
    ids = log_ids()  # observers run where the line is written: inside its span, if any
    if ids is not None:
        out["trace_id"], out["span_id"] = ids
    for key in _keys_to_copy(event):
        if key not in out:
            value = event[key]
            out[key] = value if type(value) in _PLAIN else _jsonable(value)
    failure = event.get("log_failure")
    if failure is not None:
        out["error"] = failure.getErrorMessage()
        out["traceback"] = failure.getTraceback()
    return out


#: One encoder for every line (``json.dumps`` with arguments builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _line_encoder() -> Callable[[dict[str, Any]], str]:
    """``_ENCODER.encode``, minus what it redoes per call: it builds a new C encoder (and a
    circular-reference memo) for every line.  A record is flat after :func:`event_to_dict`
    (plain values, or :func:`_jsonable`'s fresh lists and dicts), so it needs no such memo."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the stock path
        return _ENCODER.encode
    iterencode = make(None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",",
                      False, False, True)
    join = "".join

    def encode(record: dict[str, Any]) -> str:
        return join(iterencode(record, 0))

    return encode


_encode_line = _line_encoder()


@implementer(ILogObserver)
class JSONLineObserver:
    """Write each event as one JSON line (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.sinks: list[Callable[[dict[str, Any]], None]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        record = event_to_dict(event)
        for sink in self.sinks:
            sink(record)
        try:
            self._stream.write(_encode_line(record) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stdout closed: nothing sensible to do
            pass


def _format_fields(event: dict[str, Any]) -> set[str]:
    """Names of the fields the event's message already shows (``{backend}`` in its format)."""
    fmt = event.get("log_format")
    if not isinstance(fmt, str):
        return set()
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(fmt) if name}
    except ValueError:
        return set()


_BARE_VALUE = re.compile(r"[^\s\"'=\\]+")


def _text_value(value: Any) -> str:
    """A field value as it appears after ``key=``: bare when unambiguous, else JSON-quoted."""
    if isinstance(value, str) and _BARE_VALUE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_to_text(event: dict[str, Any]) -> str:
    """One human-readable line (plus an indented traceback, if any) for ``log_format: text``.

    ``time LEVEL [component] message key=value ...``: the same fields as the JSON form, except
    those the message already shows.
    """
    record = event_to_dict(event)
    shown = _format_fields(event) | {"time", "level", "component", "msg", "audit", "traceback"}
    parts = [record["time"], f"{record['level']:<5}", f"[{record['component']}]"]
    if record.get("msg"):
        parts.append(str(record["msg"]))
    parts += [f"{key}={_text_value(value)}" for key, value in record.items() if key not in shown]
    line = " ".join(parts)
    traceback = record.get("traceback")
    if traceback:
        line += "\n" + "\n".join("    " + row for row in str(traceback).rstrip().splitlines())
    return line


@implementer(ILogObserver)
class TextLineObserver:
    """Write each event as one text line (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        text = event_to_text(event)
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stdout closed: nothing sensible to do
            pass


#: The level names ``server.log_level`` and the admin API accept, as they are reported back.
LEVEL_NAMES = ("debug", "info", "warn", "error")


def normalise_level(name: str) -> str:
    """``name`` as one of :data:`LEVEL_NAMES` (``warning`` is ``warn``); ValueError otherwise."""
    value = name.strip().lower()
    value = "warn" if value == "warning" else value
    if value not in LEVEL_NAMES:
        raise ValueError(f"unknown log level {name!r} (one of {', '.join(LEVEL_NAMES)})")
    return value


@implementer(ILogObserver)
class _RingObserver:
    """Feeds the ring when lines are written as text (the JSON observer feeds it as a sink)."""

    def __init__(self, ring: LogRing) -> None:
        self.ring = ring

    def __call__(self, event: dict[str, Any]) -> None:
        self.ring.append(event_to_dict(event))


@implementer(ILogObserver)
class _Both:
    def __init__(self, *observers: ILogObserver) -> None:
        self.observers = observers

    def __call__(self, event: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(event)


#: Level order for :class:`_LevelFilter` (twisted's ``LogLevel`` compares through Python-level
#: ``__lt__`` calls on its constants).
_RANK = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3, LogLevel.critical: 4}


@implementer(ILogObserver)
class _LevelFilter:
    """Twisted's ``FilteringLogObserver`` with a ``LogLevelFilterPredicate`` holding one level
    for every namespace (all ``server.log_level`` sets), in one call: the stock pair costs
    three calls and a walk of the namespace per line.  Like it, an event without a level or
    a namespace is dropped, and a traced event records this hop."""

    def __init__(self, observer: ILogObserver, minimum: LogLevel) -> None:
        self.observer = observer
        self.minimum = _RANK[minimum]

    def __call__(self, event: dict[str, Any]) -> None:
        rank = _RANK.get(event.get("log_level"))  # None: no level (or not a LogLevel)
        if rank is None or rank < self.minimum or not event.get("log_namespace"):
            return
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))
        self.observer(event)


class LogSettings:
    """The process's log observer: ``server.log_format`` with a ``server.log_level`` filter.

    Every line written also goes to :attr:`ring` (the admin API's ``logs``).  The settings
    whose observer was made last are the process's: :func:`set_log_level` and
    :func:`get_log_level` act on them (the admin API's ``log-level``, a reload).
    """

    def __init__(
        self, level: str = "info", fmt: str = "json", stream: IO[str] | None = None, ring: LogRing | None = None
    ) -> None:
        self.level = normalise_level(level) if level.strip().lower() in _LEVELS else "info"
        self._filters: list[_LevelFilter] = []
        self.format = fmt
        self.stream = stream
        self.ring = ring if ring is not None else LogRing()
        self.json = JSONLineObserver(stream)
        self.json.sinks.append(self.ring.append)

    def set_level(self, level: str) -> None:
        """Filter from ``level`` on, at once (ValueError for an unknown name)."""
        self.level = normalise_level(level)
        for observer in self._filters:
            observer.minimum = _RANK[level_from_name(self.level)]

    def observer(self) -> ILogObserver:
        """The observer twistd installs for the whole process (these settings become the active ones)."""
        global _active
        _active = self
        base: ILogObserver = (
            _Both(TextLineObserver(self.stream), _RingObserver(self.ring)) if self.format == "text" else self.json
        )
        observer = _LevelFilter(base, level_from_name(self.level))
        self._filters.append(observer)
        return observer


_active: LogSettings | None = None


def active_settings() -> LogSettings | None:
    """The settings of the process's log observer (None before one was made)."""
    return _active


def set_log_level(level: str) -> None:
    """Change the running process's log level (admin API, reload); ValueError for an unknown name."""
    normalise_level(level)
    if _active is not None:
        _active.set_level(level)


def get_log_level() -> str:
    """The running process's log level, one of :data:`LEVEL_NAMES`."""
    return _active.level if _active is not None else "info"


class _RequestIds:
    """Request ids without a ``getrandom()`` each: 64 random bits drawn once per process (again
    in a forked child, see below) followed by a 64-bit counter.  The counter keeps a process's
    ids distinct, the random half keeps processes (and restarts) apart."""

    prefix = ""
    counter: Iterator[int] = iter(())

    @classmethod
    def renew(cls) -> None:
        cls.prefix = os.urandom(8).hex().upper()
        cls.counter = itertools.count()


_RequestIds.renew()
# A forked child must not repeat its parent's ids (os.getpid() per id would be a syscall too).
os.register_at_fork(after_in_child=_RequestIds.renew)


def new_request_id() -> str:
    """32 upper-case hex characters (s3-orchestrator's request id format), unique per process
    and, by their random half, across processes."""
    return f"{_RequestIds.prefix}{next(_RequestIds.counter) & 0xFFFFFFFFFFFFFFFF:016X}"


_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def request_id_from_header(value: str | None) -> str:
    """Reuse a client's X-Request-Id when it is a safe token, else make one."""
    if value and _REQUEST_ID_OK.match(value):
        return value
    return new_request_id()
