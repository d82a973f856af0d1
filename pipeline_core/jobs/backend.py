"""The one interface every backend offers: submit, state, cancel, list.

A backend runs a planned :class:`~.spec.JobSpec` somewhere (this host's pool, a Slurm cluster) and
answers for the jobs it ran. What a job *is* lives in its work folder (records its processes leave,
whatever the backend) and in the job table; a backend adds only what its scheduler knows (is the
runner alive, what does ``squeue`` say) to bring a table entry up to date.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .config import JobsConfig
from .outcome import frames_done
from .records import JobResult, now_iso
from .spec import JobSpec
from .store import JobRecord, JobStore
from .validate import JobError
from .workdir import WorkDir


def record_for(spec: JobSpec, native: dict | None = None) -> JobRecord:
    """The table entry of a job just submitted."""
    return JobRecord(
        job_id=spec.job_id,
        backend=spec.backend,
        name=spec.name,
        work_dir=str(spec.work_dir),
        output=str(spec.output),
        frames_total=spec.frames_total,
        submitted=spec.created or now_iso(),
        native=dict(native or {}),
    )


def apply_result(record: JobRecord, result: JobResult, work: WorkDir) -> JobRecord:
    """Copy how the job ended into its entry; the work folder goes (a failed job keeps its logs)."""
    record.state = result.state
    record.output = result.output
    record.frames_done = result.frames_integrated
    record.frames_failed = result.frames_failed
    record.reason = result.reason
    record.finished = result.finished
    if result.state != "failed":
        work.remove()
    return record


def apply_progress(record: JobRecord, spec: JobSpec, work: WorkDir) -> JobRecord:
    record.frames_done, record.frames_failed = frames_done(spec, work)
    return record


class Backend(ABC):
    """Runs jobs and answers for them; entries are kept in ``store`` (shared by every backend)."""

    name: str = ""

    def __init__(self, config: JobsConfig, store: JobStore):
        self.config = config
        self.store = store

    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Start the job (planned: name reserved, work folder written); returns its id at once."""

    @abstractmethod
    def refresh(self, record: JobRecord) -> JobRecord:
        """The entry brought up to date from the job's records and the scheduler (not saved)."""

    @abstractmethod
    def cancel(self, job_id: str) -> JobRecord:
        """Stop the job; no file is left under its final name and its partial files are removed."""

    def ranges_for(self, frames: int) -> int:
        """How many ranges a job of ``frames`` frames is split into on this backend."""
        per_task = self.config.frames_per_task
        return max(1, -(-frames // per_task))

    def threads_per_task(self) -> int:
        return 1

    def state(self, job_id: str) -> JobRecord:
        """The job's entry, up to date (saved when it changed)."""
        record = self.store.load(job_id)
        if record.backend != self.name:
            raise JobError(f"job {job_id} ran on the {record.backend} backend, not {self.name}")
        if record.ended:
            return record
        before = record.to_dict()
        record = self.refresh(record)
        if record.to_dict() != before:
            stored = self.store.load(job_id)
            if stored.ended:  # another process finished it while we looked: its ending stands
                return stored
            self.store.save(record)
        return record

    def list(self) -> list[JobRecord]:
        """Every job of this backend, up to date, oldest first."""
        return [self.state(r.job_id) for r in self.store.all() if r.backend == self.name]

    def _ended_for_cancel(self, record: JobRecord) -> JobRecord | None:
        """A job that already ended is not cancelled: its entry is the answer (a refusal for a result)."""
        if record.state == "cancelled":
            return record
        if record.ended:
            raise JobError(f"job {record.job_id} has ended ({record.state}); there is nothing to cancel")
        return None


def settled(store: JobStore, record: JobRecord, work: WorkDir) -> JobRecord | None:
    """What every backend's refresh says first: the job's result once it has one, or what became of a
    job whose work folder is gone (ended and cleaned up by another process, or lost); None otherwise."""
    result = work.result()
    if result is not None:
        return apply_result(record, result, work)
    if not work.exists():
        stored = store.load(record.job_id)  # ended and cleaned up by another process meanwhile?
        if stored.ended:
            return stored
        record.state, record.reason = "failed", f"its work folder {work.path} is gone"
        return record
    return None
