"""The ``local`` backend (the default): a process pool on this host, sized by ``local.workers``.

Each job gets a detached runner (:mod:`.local_runner`) that runs its ranges as task processes in
the host-wide pool and merges them; the job's state is on disk (its work folder and the job table),
so ``xrd-pipeline jobs`` in another process, or a restarted Stitcher, sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .backend import Backend, apply_progress, apply_result, record_for, settled
from .outcome import failure_reason, finish_cancelled, finish_failed
from .records import now_iso
from .slots import lock_held
from .spec import JobSpec
from .store import JobRecord
from .validate import JobError
from .workdir import WorkDir

#: seconds a just-submitted runner may take to take its lock before the job counts as never started
START_GRACE_S = 60.0
#: seconds a cancel waits for the runner to stop its tasks and clean up
CANCEL_TIMEOUT_S = 60.0


class LocalBackend(Backend):
    name = "local"

    @property
    def slots_directory(self):
        return self.config.state_directory / "local-slots"

    def ranges_for(self, frames: int) -> int:
        return max(self.config.local.workers, super().ranges_for(frames))

    def submit(self, spec: JobSpec) -> str:
        record = record_for(spec)
        self.store.save(record)
        command = [
            sys.executable, "-m", "pipeline_core.jobs.local_runner", str(spec.work_dir),
            "--slots", str(self.slots_directory), "--workers", str(self.config.local.workers), "--detach",
        ]  # fmt: skip
        log = WorkDir(spec.work_dir).path / "runner.log"
        try:  # returns once the runner has detached itself (a fraction of a second)
            _start_runner(command, log)
        except (OSError, subprocess.SubprocessError) as exc:
            why = f"the local runner did not start ({exc}); see {log}"
            record.state, record.reason = "failed", why
            record.finished = now_iso()
            self.store.save(record)
            raise JobError(f"job {spec.job_id}: {why}") from exc
        return spec.job_id

    def refresh(self, record: JobRecord) -> JobRecord:
        work = WorkDir(record.work_dir)
        done = settled(self.store, record, work)
        if done is not None:
            return done
        spec = work.spec()
        alive = lock_held(work.lock_file)
        result = work.result()  # it may have ended between the two looks
        if result is not None:
            return apply_result(record, result, work)
        if not alive:
            if work.pid_file.exists():
                reason = "the local runner stopped before the job ended (killed?): " + failure_reason(spec, work)
                return apply_result(record, finish_failed(spec, work, reason), work)
            if _age_s(work.spec_file) > START_GRACE_S:
                reason = f"the local runner never started; see {work.path / 'runner.log'}"
                return apply_result(record, finish_failed(spec, work, reason), work)
            record.state, record.reason = "pending", "starting"
            return record
        apply_progress(record, spec, work)
        tasks = [work.task(r.index) for r in spec.ranges]
        if all(t is not None and t.state == "done" for t in tasks):
            record.state, record.reason = "merging", ""
        elif any(t is not None for t in tasks):
            record.state, record.reason = "running", ""
        else:
            record.state, record.reason = "pending", "waiting for a free worker"
        return record

    def cancel(self, job_id: str) -> JobRecord:
        record = self.state(job_id)
        ended = self._ended_for_cancel(record)
        if ended is not None:
            return ended
        work = WorkDir(record.work_dir)
        pid = _runner_pid(work)
        if pid is not None and lock_held(work.lock_file):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + CANCEL_TIMEOUT_S
            while lock_held(work.lock_file) and time.monotonic() < deadline:
                time.sleep(0.1)
            if lock_held(work.lock_file):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        result = work.result()
        if result is None and work.exists():
            result = finish_cancelled(work.spec(), work, "cancelled")
        if result is not None:
            apply_result(record, result, work)
        else:
            record.state, record.reason = "cancelled", "cancelled"
        self.store.save(record)
        return record


def _start_runner(command: list[str], log: Path) -> None:
    """Start the runner in a session of its own, its output in its log from the first byte.

    Why: the command that submits may be stopped right after (Ctrl-C, a closed terminal's SIGHUP goes
    to the terminal's whole foreground process group); a runner still in that group, before it has
    detached itself, would die with it and leave nothing saying why. In its own session it never gets
    the terminal's signals, and whatever it prints (an import error, a refusal) is in ``runner.log``.
    """
    with open(log, "ab") as out:
        subprocess.run(
            command, check=True, timeout=60, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _runner_pid(work: WorkDir) -> int | None:
    try:
        return int(work.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _age_s(path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
