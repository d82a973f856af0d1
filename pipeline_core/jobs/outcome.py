"""How a job ends when it does not end by its merge: failed (a range, with the reason) or cancelled.

Both endings leave nothing that looks like a result: the partial files are removed and the reserved
name is given back (``<output>.part`` removed), then :class:`~.records.JobResult` says why. Written
once, used by every backend and by whoever notices first (the Slurm clean-up job, a poller, the local
runner, a cancel): each step is idempotent, so two of them finishing the same job agree.
"""

from __future__ import annotations

import re

from .records import JobResult, TaskRecord
from .spec import FrameRange, JobSpec
from .workdir import WorkDir

#: the scheduler's word for a task stopped at its time limit (Slurm's job state)
TIME_LIMIT_STATE = "TIMEOUT"


def timed_out(native: str) -> bool:
    """Whether the scheduler says the task was stopped at its time limit."""
    return re.search(rf"\b{TIME_LIMIT_STATE}\b", native) is not None


def range_failure(frame_range: FrameRange, record: TaskRecord | None, native: str = "") -> str:
    """Why one range did not finish, as an operator reads it (``native``: what the scheduler says,
    e.g. ``Slurm state TIMEOUT, TimeLimit`` or ``killed by SIGKILL``)."""
    where = frame_range.describe()
    if record is not None and record.state == "failed" and record.attempts:
        tries = len(record.attempts)
        return f"{where} failed after {tries} attempt{'s' if tries > 1 else ''}: {record.attempts[-1]}"
    if timed_out(native):  # whether the task still wrote "cancelled" (SIGTERM) or was gone before
        return f"{where}: its task was stopped at its time limit ({native}); raise slurm.time_limit"
    if record is not None and record.state == "cancelled":
        return f"{where} was stopped ({native or 'a stop signal'})"
    if native:
        return f"{where}: its task ended without finishing ({native})"
    return f"{where}: its task ended without finishing (killed, out of memory or past its time limit?)"


def retried_note(spec: JobSpec, work: WorkDir) -> str:
    """What a job that succeeded says about ranges that needed more than one attempt ("" if none)."""
    notes = []
    for r in spec.ranges:
        record = work.task(r.index)
        if record is not None and record.state == "done" and record.attempts:
            notes.append(f"{r.describe()} succeeded on attempt {len(record.attempts) + 1} "
                         f"(attempt {len(record.attempts)} failed: {record.attempts[-1]})")  # fmt: skip
    return "; ".join(notes)


def failed_ranges(spec: JobSpec, work: WorkDir) -> list[tuple[FrameRange, TaskRecord]]:
    """Ranges whose task recorded a failure (retries spent)."""
    found: list[tuple[FrameRange, TaskRecord]] = []
    for r in spec.ranges:
        record = work.task(r.index)
        if record is not None and record.state == "failed":
            found.append((r, record))
    return found


def frames_done(spec: JobSpec, work: WorkDir) -> tuple[int, int]:
    """Frames integrated and failed so far over every range (records of finished ranges, progress of others)."""
    done = failed = 0
    for r in spec.ranges:
        record = work.task(r.index)
        if record is not None and record.state == "done":
            done += record.frames_integrated
            failed += record.frames_failed
        else:
            progress = work.progress(r.index)
            done += progress.done
            failed += progress.failed
    return done, failed


def finish_failed(spec: JobSpec, work: WorkDir, reason: str) -> JobResult:
    """End the job as failed with ``reason``: partials removed, reserved name given back."""
    existing = work.result()
    if existing is not None:
        return existing
    done, failed = frames_done(spec, work)
    work.remove_partials()
    work.release_reservation(spec)
    result = JobResult("failed", str(spec.output), done, failed, reason)
    if work.exists():
        work.write_result(result)
    return result


def failure_reason(spec: JobSpec, work: WorkDir, native: dict[int, str] | None = None) -> str:
    """The reason of a failed job: the first range that failed, and how many more did."""
    native = native or {}
    found: list[tuple[bool, int, str]] = []
    for r in spec.ranges:
        record = work.task(r.index)
        if record is None or record.state != "done":
            # a range that failed by itself first; ranges stopped because of it (cancelled) after
            said = native.get(r.index, "")
            stopped = record is not None and record.state == "cancelled" and not timed_out(said)
            found.append((stopped, r.index, range_failure(r, record, said)))
    bad = [text for _, _, text in sorted(found)]
    if not bad:
        return "every range finished but the merge did not run"
    more = f"; {len(bad) - 1} more range(s) did not finish" if len(bad) > 1 else ""
    return bad[0] + more


def finish_cancelled(spec: JobSpec, work: WorkDir, by: str = "cancelled") -> JobResult:
    """End the job as cancelled: no file under the final name (unless the merge published it first),
    partials removed, reserved name given back. A job that had already ended keeps its ending."""
    existing = work.result()
    if existing is not None:
        return existing
    done, failed = frames_done(spec, work)
    work.remove_partials()
    work.release_reservation(spec)
    result = JobResult("cancelled", str(spec.output), done, failed, by)
    if work.exists():
        work.write_result(result)
    return result
