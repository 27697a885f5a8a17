"""Worker locks shared by the processes on one SQLite file: POSIX record locks, one byte per lock id.

With ``server.processes`` > 1 several processes serve one SQLite database, and each periodic
worker must still run in one of them at a time (as PostgreSQL's advisory locks do across
instances).  A lock is one byte of a file beside the database (``<path>.worker-locks``), at the
offset of its id, taken with ``fcntl.lockf(LOCK_EX | LOCK_NB)``:

- non-blocking and a single system call, so it is safe on the reactor thread;
- held by the kernel for the process: a process that dies (even ``kill -9``) drops its locks at
  once, so there is no lease to expire and no stale row to clean up;
- POSIX record locks do not exclude the process that holds them (a second ``lockf`` of the same
  byte by the same process succeeds), so the in-process set of held ids is kept too.

The file descriptor stays open for the life of the locks: closing any descriptor of the file in
this process would drop every lock (POSIX semantics), hence one descriptor, opened once.
"""

from __future__ import annotations

import fcntl
import os

from s3orch.store.locks import LocalWorkerLocks

__all__ = ["FileWorkerLocks", "lock_file_path"]


def lock_file_path(database_path: str) -> str:
    """Where the locks of the database at ``database_path`` live (next to it, same directory)."""
    return f"{database_path}.worker-locks"


class FileWorkerLocks(LocalWorkerLocks):
    """Cross-process worker locks: the in-process mutex plus a kernel record lock per id."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    async def try_lock(self, worker_id: int) -> bool:
        if not await super().try_lock(worker_id):
            return False
        try:
            fcntl.lockf(self._descriptor(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, worker_id, os.SEEK_SET)
        except OSError:  # EAGAIN/EACCES: another process holds it (or the file cannot be locked)
            await super().release(worker_id)
            return False
        return True

    async def release(self, worker_id: int) -> None:
        if worker_id in self._held and self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, worker_id, os.SEEK_SET)
        await super().release(worker_id)

    async def close(self) -> None:
        await super().close()
        if self._fd is not None:
            os.close(self._fd)  # drops every record lock this process holds on the file
            self._fd = None
