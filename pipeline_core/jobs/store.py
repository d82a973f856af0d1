"""The job table: one small JSON file per job in the state folder, shared by every process.

``xrd-pipeline reintegrate`` writes a job's entry when it submits it; ``xrd-pipeline jobs`` (another
process, later) and the Stitcher (across its restarts) read the same entries and bring them up to
date from the job's records and its backend. Once a job has ended its entry keeps the outcome, so
the work folder can go.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError
from .records import FINAL_STATES, JOB_STATES, read_json, write_json
from .validate import JobError, check_job_id


@dataclass
class JobRecord:
    """A job as the table knows it: where it is and, as of the last look, how far it got."""

    job_id: str
    backend: str
    name: str
    work_dir: str
    #: the reserved result name; the published one once the job is complete
    output: str
    frames_total: int | None
    submitted: str
    #: what the backend calls it: Slurm job ids {"array", "merge", "fail"}; empty for the local backend
    native: dict[str, Any] = field(default_factory=dict)
    state: str = "pending"
    frames_done: int = 0
    frames_failed: int = 0
    reason: str = ""
    finished: str = ""

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def progress(self) -> float:
        """Fraction of the frames done or failed (0..1; 1 once the job ended by itself)."""
        if self.state in ("complete", "incomplete"):
            return 1.0
        if not self.frames_total:
            return 0.0
        return min(1.0, (self.frames_done + self.frames_failed) / self.frames_total)

    def native_text(self) -> str:
        """The backend and its own id, as an operator types it (``slurm:1234``, ``local``)."""
        array = self.native.get("array")
        return f"{self.backend}:{array}" if array is not None else self.backend

    def summary(self) -> dict[str, Any]:
        """What the Stitcher's ``jobs`` attribute and ``xrd-pipeline jobs --json`` show per job."""
        return {
            "id": self.job_id,
            "backend": self.native_text(),
            "state": self.state,
            "progress": round(self.progress, 4),
            "frames_done": self.frames_done,
            "frames_failed": self.frames_failed,
            "frames_total": self.frames_total,
            "output": self.output,
            "reason": self.reason,
            "submitted": self.submitted,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> JobRecord | None:
        if not isinstance(data, dict) or data.get("state") not in JOB_STATES:
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


class JobStore:
    """The table in ``directory`` (created on first write)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{check_job_id(job_id)}.json"

    def save(self, record: JobRecord) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json(self._path(record.job_id), record.to_dict())
        except OSError as exc:
            raise OutputError(f"job table {self.directory}: cannot write job {record.job_id} ({exc})") from exc

    def load(self, job_id: str) -> JobRecord:
        record = JobRecord.from_dict(read_json(self._path(job_id)))
        if record is None:
            raise JobError(f"job {job_id} is not in the job table {self.directory}")
        return record

    def all(self) -> list[JobRecord]:
        """Every job, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            record = JobRecord.from_dict(read_json(path))
            if record is not None:
                found.append(record)
        return sorted(found, key=lambda r: (r.submitted, r.job_id))
