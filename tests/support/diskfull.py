"""A disk that fills up: a small filesystem for a gateway's ``spool_dir``, or a file-size limit.

:func:`small_filesystem` mounts a tmpfs of ``size`` bytes on a directory when the
tests may mount (root with CAP_SYS_ADMIN); writes past its size fail with
ENOSPC, as on a full disk.  Where mounting is not allowed it yields None, and
the test limits the gateway's file size instead
(:attr:`tests.support.gateway.GatewayProcess.file_size_limit`: RLIMIT_FSIZE, so
a write past the limit fails with EFBIG; Python ignores SIGXFSZ), which fails
the same write calls the same way for the gateway.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_filesystem(path: Path, size: int) -> Iterator[Path | None]:
    """``path`` as a tmpfs of ``size`` bytes (unmounted afterwards); None if mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield None
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
