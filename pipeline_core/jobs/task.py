"""What every backend runs: ``python -m pipeline_core.jobs.task run|merge|fail WORK_DIR [INDEX]``.

* ``run WORK_DIR [INDEX]`` integrates range INDEX (default ``$SLURM_ARRAY_TASK_ID``) of the job into
  its partial file with :func:`~pipeline_core.processing.offline.integrate_source` — the function
  ``integrate`` runs — on a :class:`~.range_source.RangeSource`. A failed attempt is tried again
  ``spec.retries`` times, RETRY_PAUSE_S later (a file system hiccup); then the range fails, its
  record naming each attempt's reason, and the process exits 1. A range that succeeded on a later
  attempt keeps the earlier reasons in its record, and the job's result names it.
* ``merge WORK_DIR`` writes the result from the partial files (:func:`~.merge.merge_job`).
* ``fail WORK_DIR`` ends a job whose ranges did not all succeed (Slurm runs it when a task failed):
  partials removed, reserved name given back, the reason recorded (with what Slurm says of each
  task, e.g. that it reached its time limit).

A stop signal (``scancel``, the local runner cancelling) ends the attempt cleanly, removes its
partial file and exits 128 + the signal; it is not retried.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import NoSpaceError, PipelineError
from ..output import part_path
from ..paths import confine
from ..processing.offline import DEFAULT_CHUNK_SIZE, integrate_source
from ..signals import exit_code, stop_signals_raise
from .merge import merge_job
from .outcome import failure_reason, finish_failed
from .range_source import RangeSource
from .ranges import frame_layout
from .records import Progress, TaskRecord, now_iso
from .slurm import array_task_states
from .source import open_job_source
from .spec import FrameRange, JobSpec
from .validate import JobError
from .workdir import WorkDir

log = logging.getLogger(__name__)

#: seconds between two progress records of a range
PROGRESS_INTERVAL_S = 0.5
#: seconds between a failed attempt of a range and the next one
RETRY_PAUSE_S = 5.0


class _ProgressWriter:
    """integrate_source's progress callback: the range's frames done, written at most every half second."""

    def __init__(self, work: WorkDir, index: int):
        self.work, self.index = work, index
        self._last = 0.0

    def __call__(self, done: int, failed: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            try:
                self.work.write_progress(self.index, Progress(done, failed))
            except OSError:  # the folder went (a cancel): the attempt is being stopped anyway
                pass


def _remove_partial(work: WorkDir, index: int) -> None:
    partial = work.partial(index)
    partial.unlink(missing_ok=True)
    part_path(partial).unlink(missing_ok=True)


def _held_frames(spec: JobSpec) -> str:
    """What the files hold, for a range that found none of its frames."""
    try:
        layout = frame_layout(open_job_source(spec))
    except PipelineError:
        return "their frames cannot be listed"
    if layout is None or layout.total == 0:
        return "they hold no frame numbers that can be read"
    numbers = [n for part in layout.numbers if part for n in part]
    return f"they hold frames {min(numbers)}-{max(numbers)}"


def attempt_range(spec: JobSpec, work: WorkDir, frame_range: FrameRange, record: TaskRecord) -> str | None:
    """Integrate the range once into its partial file; None when it succeeded, else the reason."""
    _remove_partial(work, frame_range.index)
    progress = _ProgressWriter(work, frame_range.index)
    engine: dict[str, Any] = {"engine": spec.engine} if spec.engine else {}  # integrate --engine
    try:
        source = RangeSource(open_job_source(spec), frame_range)
        report = integrate_source(
            source=source,
            settings=spec.settings,
            output=work.partial(frame_range.index),
            workers=spec.threads,
            chunk_size=DEFAULT_CHUNK_SIZE,  # the ranges were cut at its multiples
            progress=progress,
            **engine,
        )
    except PipelineError as exc:
        # a failed attempt's partial is never used, and its room is what a full disk needs back (to
        # record the reason, and for the next attempt)
        _remove_partial(work, frame_range.index)
        if isinstance(exc, NoSpaceError):  # its text says where the partial was left: it is gone now
            return f"{NoSpaceError(exc.folder, exc.needed, exc.free, exc.what)} (the attempt's partial result removed)"
        return str(exc)
    except Exception as exc:  # a bug or an unreadable file h5py reports its own way: recorded, then retried
        return f"crashed: {exc!r}"
    if report.output != work.partial(frame_range.index):
        return f"the partial result was written as {report.output}, not {work.partial(frame_range.index)}"
    if source.frames_read == 0 and source.frames_failed == 0:
        _remove_partial(work, frame_range.index)
        return f"no frame of {spec.name} has a number in {frame_range.first}-{frame_range.last}; {_held_frames(spec)}"
    record.frames_integrated = report.frames_integrated
    record.frames_failed = report.frames_failed
    progress(report.frames_integrated, report.frames_failed, force=True)
    return None


def run_range(work_dir: str | Path, index: int) -> int:
    """Run range ``index`` of the job in ``work_dir`` (with its retries); the process's exit status."""
    work = WorkDir(work_dir)
    spec = work.spec()
    confine(work.path, spec.output_roots, "work folder")
    frame_range = spec.range(index)
    record = TaskRecord(index)
    work.write_task(record)
    try:
        for attempt in range(1 + spec.retries):
            reason = attempt_range(spec, work, frame_range, record)
            if reason is None:
                record.state, record.finished = "done", now_iso()
                work.write_task(record)
                log.info("%s: %d frames", frame_range.describe(), record.frames_integrated)
                return 0
            record.attempts.append(reason)
            work.write_task(record)
            print(f"{frame_range.describe()}: attempt {attempt + 1} failed: {reason}", file=sys.stderr, flush=True)
            if attempt < spec.retries:
                time.sleep(RETRY_PAUSE_S)  # a file system hiccup passes; an immediate retry meets it again
    except KeyboardInterrupt as exc:
        _remove_partial(work, index)
        record.state, record.finished = "cancelled", now_iso()
        try:
            work.write_task(record)
        except OSError:  # the cancel removed the work folder already
            pass
        print(f"{frame_range.describe()}: stopped ({exc or 'SIGINT'})", file=sys.stderr, flush=True)
        return exit_code(exc)
    record.state, record.finished = "failed", now_iso()
    work.write_task(record)
    return 1


def run_merge(work_dir: str | Path) -> int:
    work = WorkDir(work_dir)
    spec = work.spec()
    confine(work.path, spec.output_roots, "work folder")
    confine(spec.output, spec.output_roots, "result file")
    try:
        result = merge_job(work)
    except KeyboardInterrupt as exc:
        print(f"merge of job {spec.job_id} stopped ({exc or 'SIGINT'})", file=sys.stderr, flush=True)
        return exit_code(exc)
    except (PipelineError, OSError, RuntimeError, ValueError) as exc:
        result = finish_failed(spec, work, f"merge failed: {exc}")
    print(f"job {spec.job_id}: {result.state} {result.output}", file=sys.stderr, flush=True)
    return 0 if result.state in ("complete", "incomplete") else 1


def run_fail(work_dir: str | Path) -> int:
    work = WorkDir(work_dir)
    spec = work.spec()
    result = finish_failed(spec, work, failure_reason(spec, work, array_task_states(work, spec)))
    print(f"job {spec.job_id}: {result.state}: {result.reason}", file=sys.stderr, flush=True)
    return 0


USAGE = "usage: python -m pipeline_core.jobs.task run WORK_DIR [INDEX] | merge WORK_DIR | fail WORK_DIR"


def _index(args: list[str]) -> int:
    text = args[0] if args else os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not text.isdigit():
        raise JobError(f"range index {text!r} is not a number (give INDEX or run as a Slurm array task)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("silx.opencl.common").setLevel(logging.ERROR)
    if len(args) < 2 or args[0] not in ("run", "merge", "fail"):
        print(USAGE, file=sys.stderr)
        return 2
    command, work_dir, rest = args[0], args[1], args[2:]
    try:
        with stop_signals_raise():
            if command == "run":
                return run_range(work_dir, _index(rest))
            if command == "merge":
                return run_merge(work_dir)
            return run_fail(work_dir)
    except KeyboardInterrupt as exc:
        return exit_code(exc)
    except PipelineError as exc:
        print(f"pipeline_core.jobs.task {command}: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
