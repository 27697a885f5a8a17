"""PostgreSQL for tests: throw-away databases on the shared server, and private clusters.

The shared server (``S3ORCH_TEST_POSTGRES_DSN``, default ``host=127.0.0.1
port=5432``) serves every test that only needs *a* database: each gets its
own, created here and dropped afterwards.  A test that stops and restarts
PostgreSQL must not take the shared server down under the others, so it runs
a :class:`PostgresCluster` of its own (``initdb`` into a temporary directory,
its own port), started and stopped with ``pg_ctl`` as the ``postgres`` user
when the tests run as root.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

import psycopg2
import psycopg2.extensions

from tests.support.servers import free_port

DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 sslmode=disable connect_timeout=5"


def admin_dsn(base: str | None = None) -> str:
    """The maintenance database of the test server (``S3ORCH_TEST_POSTGRES_DSN``)."""
    if base is None:
        base = os.environ.get("S3ORCH_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    return str(psycopg2.extensions.make_dsn(base, dbname="postgres"))


def create_database(admin: str, prefix: str = "s3orch_test") -> str:
    """A new, empty UTF-8 database on ``admin``'s server; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(admin)
    try:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    finally:
        conn.close()
    return str(psycopg2.extensions.make_dsn(admin, dbname=name))


def drop_database(dsn: str) -> None:
    """Drop the database of ``dsn`` (disconnecting whoever is still in it)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    conn = psycopg2.connect(psycopg2.extensions.make_dsn(dsn, dbname="postgres"))
    try:
        conn.autocommit = True
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {params['dbname']} WITH (FORCE)")
    finally:
        conn.close()


def database_section(dsn: str, **settings: object) -> dict[str, object]:
    """A ``database:`` config section for ``dsn``, written with the separate keys an
    operator uses (host, port, name, user, password, ssl_mode) plus ``settings``."""
    params = psycopg2.extensions.parse_dsn(dsn)
    section: dict[str, object] = {
        "driver": "postgres",
        "host": params.get("host", "127.0.0.1"),
        "port": int(params.get("port", 5432)),
        "name": params["dbname"],
        "ssl_mode": params.get("sslmode", "disable"),
        "min_conns": 1,
        "max_conns": 10,
    }
    # libpq's own default user (the config requires one to be named)
    section["user"] = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    if params.get("password"):
        section["password"] = params["password"]
    section.update(settings)
    return section


def bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live (``pg_config --bindir``, else Debian's path)."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


class PostgresCluster:
    """A private PostgreSQL server on 127.0.0.1:``port`` (trust auth, user ``postgres``).

    ``fsync=off``: the tests kill the *server process*, never the machine, and the
    kernel keeps what PostgreSQL wrote; ``synchronous_commit`` stays on, so an
    acknowledged commit has reached the WAL before the client hears of it.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="s3orch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres sslmode=disable connect_timeout=5"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"\n{self.log_text()[-3000:]}"
            )
        return result

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
            " -c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.init()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
