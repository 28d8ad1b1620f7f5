"""One run at a time per output directory: an flock on <output_dir>/.finetune.lock that names its holder.

The kernel releases an flock when the process holding it exits, however it exits (kill -9, OOM killer), so a dead
run never blocks the next one; the holder record it leaves behind tells the next run that it took over from a run
that did not finish. The file itself is never deleted: unlinking a lock file lets two processes lock two different
files of the same name.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.outputs import log

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there (a warning says so)
    fcntl = None  # type: ignore[assignment]


LOCK_FILE = ".finetune.lock"


class LockBusy(UserError, RuntimeError):
    """Another live run holds the output directory."""


def holder_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv)}


def describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}: "
            f"{holder.get('command', '?')}")


class OutputLock:
    """Held from acquire() until release() or the end of the process."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            log.warning("No file locking on this platform: nothing stops a second run from using %s",
                        self.path.parent)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise LockBusy(f"{self.path.parent} is in use by another run ({describe(holder)}). Wait for it to "
                           f"finish, or give this run another output_dir=...") from None
        previous = self._read(fd)
        if previous:  # a clean exit empties the record: this run was killed or crashed hard
            log.warning("Took over %s from a run that did not finish (%s); it is no longer running",
                        self.path, describe(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)  # empty record = the last holder finished normally
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            data = os.pread(fd, 65536, 0)
            return json.loads(data) if data.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "command": "unreadable lock record"}


def hold_lock(directory: str | Path) -> OutputLock:
    """Create `directory` if needed and lock it until this process exits (raises LockBusy when another run holds
    it)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    lock = OutputLock(directory)
    lock.acquire()
    atexit.register(lock.release)
    return lock
