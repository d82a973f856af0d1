"""The small records a job's processes leave in its work folder, and how they are written.

Why records: a Slurm cluster without accounting (``sacct``) forgets a job minutes after it ended,
and a local pool's processes are gone once they exit; each task therefore writes what it did
(:class:`TaskRecord`), how far it got (:class:`Progress`), and the merge (or the clean-up of a
failed or cancelled job) the outcome (:class:`JobResult`). Every record is written atomically
(temporary file + rename), so a reader on another node never sees half a record.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: what a job can be: the first four while it runs, the last four once it ended
JOB_STATES = ("pending", "running", "merging", "cancelling", "complete", "incomplete", "failed", "cancelled")
FINAL_STATES = ("complete", "incomplete", "failed", "cancelled")
TASK_STATES = ("running", "done", "failed", "cancelled")


def now_iso(timespec: str = "seconds") -> str:
    """Local time with its UTC offset; ``timespec="microseconds"`` where it orders jobs submitted together."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec=timespec)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON at ``path`` atomically (never half a file, also for readers on other hosts)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # readable like the result it describes (mkstemp makes it private)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path) -> Any | None:
    """The JSON at ``path``, or None when there is none (or it cannot be read: written again soon)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class TaskRecord:
    """What the task of one range did."""

    index: int
    state: str = "running"
    #: the reason each failed attempt gave, in order
    attempts: list[str] = field(default_factory=list)
    frames_integrated: int = 0
    frames_failed: int = 0
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=now_iso)
    finished: str = ""

    @classmethod
    def from_dict(cls, data: Any) -> TaskRecord | None:
        if not isinstance(data, dict) or data.get("state") not in TASK_STATES:
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """Frames of one range done so far (written every ~half second while it runs)."""

    done: int = 0
    failed: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> Progress:
        if not isinstance(data, dict):
            return cls()
        return cls(int(data.get("done", 0)), int(data.get("failed", 0)))


@dataclass
class JobResult:
    """How a job ended."""

    state: str
    #: the result file (complete/incomplete); the name it would have had otherwise
    output: str
    frames_integrated: int = 0
    frames_failed: int = 0
    reason: str = ""
    finished: str = field(default_factory=now_iso)

    @classmethod
    def from_dict(cls, data: Any) -> JobResult | None:
        if not isinstance(data, dict) or data.get("state") not in FINAL_STATES:
            return None
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
