"""A job's work folder: ``<output folder>/.xrd-jobs/<job id>/``, beside the result it will make.

It lies under the output root (so a cluster's tasks, which write there, can reach it as the result's
folder is reached) and holds, by name::

    spec.json                 the JobSpec every process of the job reads
    range_000.json            TaskRecord of range 0 (running/done/failed, each attempt's reason)
    range_000.progress.json   frames done so far
    range_000.nxs[.part]      the partial result of range 0
    result.json               JobResult: how the job ended (merge, failure clean-up or cancel)
    runner.lock, runner.pid   the local backend's runner (held while it runs)
    task.py, slurm-*.out      the Slurm backend's batch script and task logs

Nothing here is ever a result: partial files are removed when the job ends, whatever the ending.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..output import part_path
from .records import JobResult, Progress, TaskRecord, read_json, write_json
from .spec import JobSpec

JOBS_FOLDER = ".xrd-jobs"


def reservation_text(job_id: str) -> bytes:
    """What a job writes into the ``<output>.part`` it reserved (until its merge writes the result there)."""
    return f"reserved by xrd-pipeline job {job_id}\n".encode()


def work_dir_for(output: Path, job_id: str) -> Path:
    return Path(output).parent / JOBS_FOLDER / job_id


class WorkDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- names -------------------------------------------------------------------------------------------
    @property
    def spec_file(self) -> Path:
        return self.path / "spec.json"

    @property
    def result_file(self) -> Path:
        return self.path / "result.json"

    @property
    def lock_file(self) -> Path:
        return self.path / "runner.lock"

    @property
    def pid_file(self) -> Path:
        return self.path / "runner.pid"

    def task_file(self, index: int) -> Path:
        return self.path / f"range_{index:03d}.json"

    def progress_file(self, index: int) -> Path:
        return self.path / f"range_{index:03d}.progress.json"

    def partial(self, index: int) -> Path:
        """The final name of range ``index``'s partial result (written as ``<name>.part`` first)."""
        return self.path / f"range_{index:03d}.nxs"

    # -- records -------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_dir()

    def spec(self) -> JobSpec:
        return JobSpec.read(self.spec_file)

    def write_spec(self, spec: JobSpec) -> None:
        write_json(self.spec_file, spec.to_dict())

    def task(self, index: int) -> TaskRecord | None:
        return TaskRecord.from_dict(read_json(self.task_file(index)))

    def write_task(self, record: TaskRecord) -> None:
        write_json(self.task_file(record.index), record.to_dict())

    def progress(self, index: int) -> Progress:
        return Progress.from_dict(read_json(self.progress_file(index)))

    def write_progress(self, index: int, progress: Progress) -> None:
        write_json(self.progress_file(index), {"done": progress.done, "failed": progress.failed})

    def result(self) -> JobResult | None:
        return JobResult.from_dict(read_json(self.result_file))

    def write_result(self, result: JobResult) -> None:
        write_json(self.result_file, result.to_dict())

    # -- clean-up ----------------------------------------------------------------------------------------------
    def remove_partials(self) -> None:
        """Remove every partial result (and its .part) of the job."""
        if not self.exists():
            return
        for path in self.path.glob("range_*.nxs*"):
            path.unlink(missing_ok=True)

    def release_reservation(self, spec: JobSpec) -> None:
        """Give the reserved name back: remove ``<output>.part`` if it is still this job's reservation.

        Only a reservation that names this job is removed: once given back, the name may have been
        reserved by another job, whose ``.part`` a late clean-up of this one must not touch."""
        part = part_path(spec.output)
        try:
            with open(part, "rb") as fh:
                head = fh.read(len(reservation_text(spec.job_id)) + 1)
        except OSError:
            return
        if head == reservation_text(spec.job_id):
            part.unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the whole folder (a job that ended and whose outcome is in the job table)."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:  # the .xrd-jobs folder goes too once empty
            self.path.parent.rmdir()
        except OSError:
            pass
