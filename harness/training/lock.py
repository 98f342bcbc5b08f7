"""One trainer per run directory: `RUN_DIR/.train.lock`, locked while a process trains there.

The lock is `fcntl.flock` on that file, so the kernel drops it when its process ends, however
it ends: a killed run never leaves the directory locked. The file names its holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import UserError

LOCK_FILE = ".train.lock"


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's training lock (creating the directory) for the block.

    A UserError names the process that holds it when another process trains there.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: a file, not a run directory; give a new or existing "
                        "directory as the run directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(
                f"{run_dir}: {holder} is training this run directory; wait for it to finish or "
                f"stop it, or use another --run-dir (its lock: {path})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as error:  # (a full disk: the one-line error names the file)
            error.filename = str(path)
            raise
        yield
    finally:
        os.close(fd)
