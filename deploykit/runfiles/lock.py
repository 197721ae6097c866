"""One run per folder: a lock file holding the writer's PID and host.

Two runs writing into one folder would interleave their checkpoints and reports file by file.
:func:`run_lock` holds an exclusive ``flock`` on ``.deploykit.lock`` and writes its PID, host
and start time into it. A second run cannot take the lock and stops with an error naming the
holder. The kernel drops a killed process's lock, so a lock file left by a run killed with
``kill -9`` is stale: the next run takes it over (and says so).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploykit.errors import DeployKitError
from deploykit.host.progress import log

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock"]

LOCK_NAME = ".deploykit.lock"


class RunLockedError(DeployKitError):
    """Another live run holds the folder's lock."""


def _holder(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[Path]:
    """Hold ``folder``'s lock for the body; release it after, even on errors.

    Raises:
        RunLockedError: another live run holds it (naming its PID, host and start time).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _holder(fd)
            os.close(fd)
            who = ("another run" if info is None else
                   f"run pid {info.get('pid')} on {info.get('host')} (started "
                   f"{info.get('started_utc')} UTC)")
            raise RunLockedError(
                f"{folder}: {who} is writing into this folder. Wait for it to finish or stop "
                "it, or choose another --output") from None
        try:   # the holder before us may have removed the file between our open and flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    old = _holder(fd)
    if old is not None:
        log(f"{folder}: taking over the lock of run pid {old.get('pid')} on {old.get('host')}, "
            "which is gone (killed or crashed)")
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(me).encode())
    os.fsync(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()   # while still holding it: a waiter re-checks the inode
        os.close(fd)
