"""``s3orch-admin <command>``: one command per admin API route, against a running gateway.

Where: ``--addr`` (or ``S3ORCH_ADMIN_ADDR``), else ``server.listen_addr`` of ``--config``
(https when ``server.tls`` is set).  The token: ``S3ORCH_ADMIN_TOKEN``, else the config's
``ui.admin_token`` (falling back to ``ui.admin_key``).  Human output by default, ``--json``
prints the answer as it came.  Long passes draw a progress bar from the streamed events.

Exit status: 0 done, 1 the gateway refused or the operation failed, 2 usage, config or
connection problem; the reason is one line on stderr.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

from s3orch.cli.client import AdminClient, ConnectionProblem, OperationFailed, listen_to_url, normalise_addr
from s3orch.cli.options import config_option
from s3orch.cli.progress import ProgressBar

__all__ = ["COMMANDS"]


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def admin_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options every admin command takes (where, how long, how to print)."""
    for option in (
        click.option("--json", "-json", "as_json", is_flag=True, help="Print the raw JSON answer."),
        click.option(
            "--addr", "-addr", envvar="S3ORCH_ADMIN_ADDR", show_envvar=True, metavar="HOST:PORT|URL",
            help="The gateway (default: server.listen_addr of the config).",
        ),
        click.option(
            "--timeout", type=float, default=30.0, show_default=True,
            help="Seconds to wait for an answer, or for each progress line of a long pass.",
        ),
        click.option("--cacert", metavar="FILE", envvar="S3ORCH_ADMIN_CACERT", help="CA bundle trusted for https."),
        click.option("--insecure", is_flag=True, help="Do not verify the gateway's TLS certificate."),
    ):
        function = option(function)
    return config_option(function)


def client_from(options: dict[str, Any]) -> AdminClient:
    """The admin client the options, environment and config file describe."""
    from s3orch.config import ConfigError, load_config

    addr: str | None = options.get("addr")
    token = os.environ.get("S3ORCH_ADMIN_TOKEN", "")
    config = None
    if not addr or not token:
        path = options["config_path"]
        try:
            config = load_config(path)
        except ConfigError as exc:
            first = exc.errors[0] if exc.errors else exc
            _fail(f"cannot read the config {path} (for the address and token): {first}", 2)
    tls = bool(config is not None and config.server.tls is not None)
    if addr:
        url = normalise_addr(addr, tls)
    else:
        assert config is not None
        url = listen_to_url(config.server.listen_addr, tls)
    if not token:
        assert config is not None
        token = config.ui.effective_admin_token
    if not token:
        _fail("no admin token: set S3ORCH_ADMIN_TOKEN or ui.admin_token in the config", 2)
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=options.get("cacert") or None)
        if options.get("insecure"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        return AdminClient(url, token, timeout=options["timeout"], context=context)
    except ConnectionProblem as exc:
        _fail(str(exc), 2)


def run(options: dict[str, Any], work: Callable[[AdminClient], dict[str, Any]], show: Callable[[dict[str, Any]], None]) -> None:
    client = client_from(options)
    try:
        answer = work(client)
    except ConnectionProblem as exc:
        _fail(str(exc), 2)
    except OperationFailed as exc:
        suffix = f" (HTTP {exc.status}, request id {exc.request_id})" if exc.request_id else f" (HTTP {exc.status})"
        _fail(exc.message + suffix, 1)
    if options["as_json"]:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
    else:
        show(answer)


def counts(*names: str) -> Callable[[dict[str, Any]], None]:
    """A pass's answer as one line, ``name: value`` for each of ``names`` in order (the bulk
    passes: encrypt/decrypt/compress/decompress-existing, rotate-encryption-key)."""

    def show(answer: dict[str, Any]) -> None:
        click.echo(", ".join(f"{name}: {answer.get(name)}" for name in names))

    return show


def streamed(
    options: dict[str, Any], method: str, path: str, label: str, *, query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
) -> Callable[[AdminClient], dict[str, Any]]:
    """A pass run with its progress drawn on stderr (not with ``--json``: scripts want the answer)."""

    def work(client: AdminClient) -> dict[str, Any]:
        bar = None if options["as_json"] else ProgressBar(sys.stderr, label=label)
        try:
            return client.stream(method, path, bar.event if bar else (lambda event: None), query=query, body=body)
        finally:
            if bar is not None:
                bar.close()

    return work


def _when(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    step = 1024.0
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < step or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= step
    return str(value)


def _table(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


# --- the commands ------------------------------------------------------------------------------


@click.command()
@admin_options
def status(**options: Any) -> None:
    """Database health, readiness and every backend's usage."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"database: {'healthy' if a.get('db_healthy') else 'UNAVAILABLE'}")
        click.echo(f"ready:    {'yes' if a.get('ready') else 'no'}")
        click.echo(f"version:  {a.get('version')}")
        rows = [["BACKEND", "USED", "LIMIT", "ORPHAN", "RESERVED", "OBJECTS"]]
        for b in a.get("backends", []):
            limit = "unlimited" if b.get("bytes_limit") == 0 else _size(b.get("bytes_limit"))
            rows.append([
                str(b.get("name")), _size(b.get("bytes_used")), limit, _size(b.get("orphan_bytes")),
                _size(b.get("reserved_bytes")), str(b.get("object_count", "-")),
            ])
        _table(rows)
        if a.get("usage_period"):
            click.echo(f"usage {a['usage_period']}:")
            _usage_table(a.get("backends", []))

    run(options, lambda c: c.call("GET", "status"), show)


@click.command(name="object-locations")
@click.option("--key", "-key", "key", required=True, metavar="BUCKET/KEY", help="The object, bucket first.")
@admin_options
def object_locations(key: str, **options: Any) -> None:
    """Where the copies of one object are stored."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"{a.get('key')}: {_size(a.get('size'))}, etag {a.get('etag')}")
        rows = [["BACKEND", "PART", "SIZE", "STORAGE KEY"]]
        for loc in a.get("locations", []):
            rows.append([str(loc["backend"]), str(loc["part_number"]), _size(loc["size"]), str(loc["storage_key"])])
        _table(rows)

    run(options, lambda c: c.call("GET", "object-locations", query={"key": key}), show)


def _limit_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--limit", type=click.IntRange(0, 1000), default=50, show_default=True)(function)


@click.command(name="cleanup-queue")
@_limit_option
@admin_options
def cleanup_queue(limit: int, **options: Any) -> None:
    """Backend deletes waiting to be retried."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"depth: {a.get('depth')}")
        rows = [["ID", "BACKEND", "SIZE", "ATTEMPTS", "NEXT RETRY", "REASON", "LAST ERROR"]]
        for i in a.get("items", []):
            rows.append([
                str(i["id"]), str(i["backend"]), _size(i["size"]), str(i["attempts"]), _when(i["next_retry"]),
                str(i["reason"]), str(i.get("last_error") or "")[:60],
            ])
        if len(rows) > 1:
            _table(rows)

    run(options, lambda c: c.call("GET", "cleanup-queue", query={"limit": limit}), show)


def _show_dlq(a: dict[str, Any]) -> None:
    click.echo(f"dead letters: {a.get('count')} ({_size(a.get('bytes'))} still counted as orphaned)")
    rows = [["ID", "BACKEND", "SIZE", "ATTEMPTS", "MOVED", "STORAGE KEY", "LAST ERROR"]]
    for i in a.get("items", []):
        rows.append([
            str(i["id"]), str(i["backend"]), _size(i["size"]), str(i["attempts"]), _when(i["moved_at"]),
            str(i["storage_key"]), str(i.get("last_error") or "")[:60],
        ])
    if len(rows) > 1:
        _table(rows)


@click.command(name="cleanup-dlq")
@click.option("--backend", help="Only this backend's rows.")
@_limit_option
@admin_options
def cleanup_dlq(backend: str | None, limit: int, **options: Any) -> None:
    """Backend deletes that failed 10 times (the dead-letter queue)."""
    run(options, lambda c: c.call("GET", "cleanup-dlq", query={"backend": backend, "limit": limit}), _show_dlq)


def _selection(ids: tuple[int, ...], backend: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return {"backend": backend}, ({"ids": list(ids)} if ids else None)


@click.command(name="cleanup-dlq-requeue")
@click.option("--backend", help="Only this backend's rows.")
@click.option("--id", "ids", type=int, multiple=True, help="Only this row (repeatable).")
@admin_options
def cleanup_dlq_requeue(backend: str | None, ids: tuple[int, ...], **options: Any) -> None:
    """Move dead letters back to the cleanup queue, to be retried now."""
    query, body = _selection(ids, backend)
    run(
        options,
        streamed(options, "POST", "cleanup-dlq/requeue", "requeue", query=query, body=body),
        lambda a: click.echo(f"requeued {a.get('requeued')} row(s)"),
    )


@click.command(name="cleanup-dlq-write-off")
@click.option("--backend", help="Only this backend's rows.")
@click.option("--id", "ids", type=int, multiple=True, help="Only this row (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@admin_options
def cleanup_dlq_write_off(backend: str | None, ids: tuple[int, ...], everything: bool, **options: Any) -> None:
    """Forget dead letters and release their bytes from the quota (objects deleted by hand)."""
    if not ids and not backend and not everything:
        raise click.UsageError("say which rows: --id, --backend or --all")
    query, body = _selection(ids, backend)
    if everything and not ids:
        body = {"all": True}
    run(
        options,
        streamed(options, "POST", "cleanup-dlq/write-off", "write-off", query=query, body=body),
        lambda a: click.echo(f"wrote off {a.get('rows')} row(s), released {_size(a.get('bytes'))}"),
    )


@click.command(name="usage-flush")
@admin_options
def usage_flush(**options: Any) -> None:
    """Flush the usage counters to the database and refresh the gauges now."""

    def show(a: dict[str, Any]) -> None:
        click.echo(a.get("status", "") + (f": {a['reason']}" if a.get("reason") else ""))

    run(options, streamed(options, "POST", "usage-flush", "usage-flush"), show)


def _usage_table(backends: list[dict[str, Any]]) -> None:
    """Monthly usage against limits, one row per backend (``status`` and ``usage``)."""

    def of(used: Any, limit: Any, size: bool) -> str:
        shown = _size(used) if size else str(used)
        return f"{shown} / {(_size(limit) if size else str(limit)) if limit else 'unlimited'}"

    rows = [["BACKEND", "API REQUESTS", "EGRESS", "INGRESS"]]
    for b in backends:
        rows.append([
            str(b.get("name")), of(b.get("api_requests"), b.get("api_request_limit"), False),
            of(b.get("egress_bytes"), b.get("egress_byte_limit"), True),
            of(b.get("ingress_bytes"), b.get("ingress_byte_limit"), True),
        ])
    _table(rows)


@click.command()
@click.option("--backend", "-backend", "backend", default=None, help="Only this backend.")
@click.option("--period", "-period", "period", default=None, metavar="YYYY-MM", help="Default: this month (UTC).")
@admin_options
def usage(backend: str | None, period: str | None, **options: Any) -> None:
    """Monthly API requests, egress and ingress per backend against the limits."""
    query = {k: v for k, v in (("backend", backend), ("period", period)) if v}

    def show(a: dict[str, Any]) -> None:
        click.echo(f"period: {a.get('period')}")
        _usage_table(a.get("backends", []))

    run(options, lambda c: c.call("GET", "usage", query=query or None), show)


@click.command()
@admin_options
def replicate(**options: Any) -> None:
    """Run a replication pass now, drawing its progress (one step per under-replicated extent)."""

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        click.echo(
            f"copies created: {a.get('copies_created')}, extents scanned: {a.get('scanned')},"
            f" failed: {a.get('failed')}, no target: {a.get('no_target')}, stale: {a.get('stale')},"
            f" copied {_size(a.get('bytes_copied'))}"
        )

    run(options, streamed(options, "POST", "replicate", "replicate"), show)


@click.command()
@admin_options
def lifecycle(**options: Any) -> None:
    """Run the lifecycle expiration rules now."""

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(a.get("status", "") + (f": {a['reason']}" if a.get("reason") else ""))
            return
        click.echo(
            f"lifecycle {a.get('outcome')}: deleted {a.get('deleted')}, failed {a.get('failed')},"
            f" skipped {a.get('skipped')} (overwritten since they expired); run {a.get('run_id')}"
        )

    run(options, streamed(options, "POST", "lifecycle", "lifecycle"), show)


@click.command(name="log-level")
@click.option("--set", "-set", "level", type=click.Choice(["debug", "info", "warn", "error"]), help="The new level.")
@admin_options
def log_level(level: str | None, **options: Any) -> None:
    """Show or change the running gateway's log level."""

    def show(a: dict[str, Any]) -> None:
        previous = f" (was {a['previous']})" if a.get("previous") else ""
        click.echo(f"log level: {a.get('level')}{previous}")

    if level is None:
        run(options, lambda c: c.call("GET", "log-level"), show)
    else:
        run(options, lambda c: c.call("PUT", "log-level", body={"level": level}), show)


@click.command()
@admin_options
def workers(**options: Any) -> None:
    """Each background worker: last tick, result, next run, lock holder."""

    def show(a: dict[str, Any]) -> None:
        rows = [["WORKER", "RUNNING", "LAST TICK", "RESULT", "NEXT RUN", "LOCK"]]
        for w in a.get("workers", []):
            rows.append([
                str(w.get("name")), "yes" if w.get("running") else "no", _when(w.get("last_tick_at")),
                str(w.get("last_result") or "-"), _when(w.get("next_run_at")), str(w.get("lock_holder") or "-"),
            ])
        _table(rows)
        for w in a.get("workers", []):
            if w.get("last_error"):
                click.echo(f"{w.get('name')}: {w['last_error']}")

    run(options, lambda c: c.call("GET", "workers"), show)


@click.command(name="reload-status")
@admin_options
def reload_status(**options: Any) -> None:
    """The outcome of the last configuration reload."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"status: {a.get('status')}")
        if a.get("at") is not None:
            click.echo(f"at:     {_when(a.get('at'))}")
        if a.get("error"):
            click.echo(f"error:  {a['error']}")
        for name in ("changed", "restart_required"):
            if a.get(name):
                click.echo(f"{name.replace('_', ' ')}: {', '.join(map(str, a[name]))}")

    run(options, lambda c: c.call("GET", "reload-status"), show)


@click.command()
@click.option("--level", type=click.Choice(["debug", "info", "warn", "error"]), help="This level or above.")
@click.option("--component", help="Only this component's lines.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@admin_options
def logs(level: str | None, component: str | None, limit: int, **options: Any) -> None:
    """Recent log lines of the gateway (from its in-memory ring)."""

    def show(a: dict[str, Any]) -> None:
        for line in a.get("lines", []):
            extra = {k: v for k, v in line.items() if k not in ("time", "level", "component", "msg")}
            tail = " " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
            click.echo(f"{line.get('time')} {line.get('level', ''):<5} [{line.get('component')}] {line.get('msg', '')}{tail}")

    query = {"level": level, "component": component, "limit": limit}
    run(options, lambda c: c.call("GET", "logs", query=query), show)


@click.command(name="over-replication")
@click.option("--execute", is_flag=True, help="Remove the excess copies (default: only show what would go).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Extents per page when executing.")
@admin_options
def over_replication(execute: bool, batch_size: int | None, **options: Any) -> None:
    """Show the copies beyond replication.factor that would be removed; --execute removes them."""

    def preview(a: dict[str, Any]) -> None:
        if a.get("status") == "skipped":
            click.echo(f"skipped: {a.get('reason', '')}")
            return
        click.echo(f"factor: {a.get('factor')}, over-replicated extents: {a.get('pending')}")
        rows = [["KEY", "SIZE", "COPIES", "REMOVE"]]
        for r in a.get("removals", []):
            name = f"{r['bucket']}/{r['key']}" + (f"#{r['part_number']}" if r.get("part_number") else "")
            rows.append([
                name, _size(r.get("size")), ",".join(r.get("copies", [])),
                ",".join(f"{v['backend']} ({v['score']})" for v in r.get("remove", [])),
            ])
        if len(rows) > 1:
            _table(rows)

    def executed(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        click.echo(
            f"copies removed: {a.get('copies_removed')}, extents scanned: {a.get('scanned')},"
            f" unchanged: {a.get('unchanged')}, freed {_size(a.get('bytes_freed'))}"
        )

    if not execute:
        run(options, lambda c: c.call("GET", "over-replication"), preview)
        return
    query = {"batch_size": batch_size} if batch_size else None
    run(options, streamed(options, "POST", "over-replication", "over-replication", query=query), executed)


@click.command(name="rebalance")
@click.option("--execute", is_flag=True, help="Move the copies (default: only show the plan).")
@click.option("--strategy", type=click.Choice(["pack", "spread"]), default=None,
              help="Plan by this strategy (default: the configured one; spread when the rebalancer is off).")
@admin_options
def rebalance(execute: bool, strategy: str | None, **options: Any) -> None:
    """Show each backend's utilisation and the moves a rebalance pass would make; --execute moves them."""

    def preview(a: dict[str, Any]) -> None:
        click.echo(
            f"strategy: {a.get('strategy')}, spread: {a.get('spread')}, threshold: {a.get('threshold')}"
            + (f" (skipped: {a['skipped']})" if a.get("skipped") else "")
        )
        _table([["BACKEND", "OCCUPIED", "LIMIT", "UTILISATION"]] + [
            [b["backend"], _size(b.get("occupied")), _size(b.get("limit")), f"{b.get('utilisation', 0):.3f}"]
            for b in a.get("backends", [])
        ])
        moves = [["KEY", "SIZE", "FROM", "TO"]] + [
            [f"{m['bucket']}/{m['key']}" + (f"#{m['part_number']}" if m.get("part_number") else ""),
             _size(m.get("size")), m.get("from", ""), m.get("to", "")]
            for m in a.get("moves", [])
        ]
        if len(moves) > 1:
            click.echo(f"planned moves: {len(moves) - 1}")
            _table(moves)

    def executed(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        click.echo(
            f"moved: {a.get('moved')} of {a.get('planned')} planned ({_size(a.get('bytes_moved'))}),"
            f" stale: {a.get('stale')}, failed: {a.get('failed')}"
        )

    query = {"strategy": strategy} if strategy else None
    if not execute:
        run(options, lambda c: c.call("GET", "rebalance", query=query), preview)
        return
    run(options, streamed(options, "POST", "rebalance", "rebalance", query=query), executed)


#: Every admin command, added to the ``s3orch-admin`` group by :mod:`s3orch.cli.main`.
COMMANDS = (
    status, object_locations, cleanup_queue, cleanup_dlq, cleanup_dlq_requeue, cleanup_dlq_write_off,
    usage_flush, usage, replicate, over_replication, rebalance, lifecycle, log_level, workers, reload_status, logs,
)
