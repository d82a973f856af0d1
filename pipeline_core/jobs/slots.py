"""The local pool's size, host-wide: ``workers`` slot files, each held (flock) by the task it runs.

Several local jobs may run at once (an operator reintegrates two scans); together they still run at
most ``workers`` tasks, because a task starts only while its runner holds one of the slot locks. A
lock dies with the process that holds it, so a killed runner frees its slots by itself.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LocalSlots:
    def __init__(self, directory: str | Path, workers: int):
        self.directory = Path(directory)
        self.workers = workers

    def try_acquire(self) -> int | None:
        """A held slot (a file descriptor: close it to release), or None when all are taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for k in range(self.workers):
            fd = os.open(self.directory / f"slot-{k}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)


def lock_held(path: str | Path) -> bool:
    """Whether some process holds the flock on ``path`` (False when the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases it if we got it
    return False
