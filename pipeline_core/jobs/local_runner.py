"""The local backend's runner: ``python -m pipeline_core.jobs.local_runner WORK_DIR --slots DIR --workers N``.

One detached process per local job (it outlives the command or device that submitted it): it runs
each range as its own ``python -m pipeline_core.jobs.task run`` process — the very command a Slurm
array task runs — at most as many at once as the host's pool has slots (:mod:`.slots`), then
merges. It holds ``runner.lock`` in the work folder while it lives, which is how another process
tells a running job from one whose runner was killed.

A range that fails (after its retries) stops the others and fails the job with that range's reason.
SIGTERM (a cancel) stops the tasks, removes the partial files, gives the reserved name back and
records the job as cancelled. The tasks die with the runner even when it is killed outright
(``PR_SET_PDEATHSIG``: each gets SIGTERM, removes its partial file and records itself stopped), and
they hold ``runner.lock`` with it: whoever looks next finds the job failed ("the local runner
stopped before the job ended") only once none of its processes runs or writes. SIGHUP is ignored:
the runner has detached from every terminal, so a hang-up is not a request to stop the job
(``reintegrate --wait`` may be waiting for it in a terminal that closes).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import PipelineError
from ..signals import exit_code, signals_deferred, stop_signals_raise
from .merge import merge_job
from .outcome import failure_reason, finish_cancelled, finish_failed
from .slots import LocalSlots
from .workdir import WorkDir

_POLL_S = 0.1
#: seconds a task gets to stop after SIGTERM before SIGKILL
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def _die_with_runner() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux/glibc: a killed runner may leave its tasks running
        pass


def _task_env() -> dict[str, str]:
    """One OpenMP thread per task unless the user says otherwise: the pool's processes share the host."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Runner:
    def __init__(self, work: WorkDir, slots: LocalSlots, lock_fd: int | None = None):
        self.work = work
        self.slots = slots
        #: the job's lock, inherited by every task: the lock is held until the runner *and* its tasks are
        #: gone, so a job whose runner was killed is concluded only once no task of it runs or writes
        self.lock_fd = lock_fd
        self.spec = work.spec()
        self.running: dict[int, tuple[subprocess.Popen, int]] = {}

    def _start(self, index: int, slot: int) -> None:
        log = open(self.work.path / f"range_{index:03d}.log", "ab")
        with log, signals_deferred():  # a cancel during Popen would lose the child: started and recorded first
            process = subprocess.Popen(
                [sys.executable, "-m", "pipeline_core.jobs.task", "run", str(self.work.path), str(index)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_runner,
                env=_task_env(),
                pass_fds=() if self.lock_fd is None else (self.lock_fd,),
            )
            self.running[index] = (process, slot)

    def _reap(self) -> list[tuple[int, int]]:
        """Ranges whose task ended since the last look: (index, exit status)."""
        ended = []
        for index, (process, slot) in list(self.running.items()):
            rc = process.poll()
            if rc is not None:
                LocalSlots.release(slot)
                del self.running[index]
                ended.append((index, rc))
        return ended

    def stop_all(self) -> None:
        """SIGTERM every task, SIGKILL those still up after STOP_TIMEOUT_S; release their slots."""
        for process, _ in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process, slot in self.running.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            LocalSlots.release(slot)
        self.running.clear()

    def run(self) -> int:
        pending = collections.deque(r.index for r in self.spec.ranges)
        while pending or self.running:
            while pending:
                slot = self.slots.try_acquire()
                if slot is None:
                    break
                self._start(pending.popleft(), slot)
            for index, rc in self._reap():
                if rc != 0:
                    self.stop_all()
                    native = {index: _how_it_ended(rc)}
                    finish_failed(self.spec, self.work, failure_reason(self.spec, self.work, native))
                    return 1
            time.sleep(_POLL_S)
        try:
            result = merge_job(self.work)
        except (PipelineError, OSError, RuntimeError, ValueError) as exc:
            result = finish_failed(self.spec, self.work, f"merge failed: {exc}")
        return 0 if result.state in ("complete", "incomplete") else 1


def _how_it_ended(rc: int) -> str:
    """A task's exit status as an operator reads it: ``exit status 1``, ``killed by SIGKILL``."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def _detach(log_path: Path) -> None:
    """Become a daemon: the submitter's child exits at once (no zombie), this grandchild goes on alone."""
    if os.fork():
        os._exit(0)
    os.setsid()
    fd = os.open(log_path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_core.jobs.local_runner")
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--slots", type=Path, required=True, help="the host's slot folder (pool size = --workers)")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--detach", action="store_true", help="run in the background, detached from the caller")
    args = parser.parse_args(argv)
    work = WorkDir(args.work_dir)
    if args.detach:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal of ours from here on: see the module's doc
        _detach(work.path / "runner.log")
    lock = os.open(work.lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    if not _take_lock(lock):
        os.close(lock)
        print(f"another runner runs job {work.path.name}", file=sys.stderr)
        return 0
    if work.result() is not None:  # cancelled before this runner got going
        os.close(lock)
        return 0
    work.pid_file.write_text(f"{os.getpid()}\n")
    runner: Runner | None = None
    try:
        with stop_signals_raise():  # SIGTERM/SIGINT cancel the job; a second one never cuts the cancel short
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # detached: a hang-up is not a cancel
            try:
                runner = Runner(work, LocalSlots(args.slots, args.workers), lock)
                return runner.run()
            except KeyboardInterrupt as exc:
                _cancel(work, runner)
                return exit_code(exc)
    finally:
        os.close(lock)


#: seconds a starting runner tries for its lock: ``lock_held`` (a waiting ``reintegrate --wait``, the
#: Stitcher) takes it for an instant to see whether a runner holds it
LOCK_PATIENCE_S = 2.0


def _take_lock(fd: int) -> bool:
    """The job's lock, or False when another runner holds it. Retried for LOCK_PATIENCE_S: a look by
    ``lock_held`` that lands on our first try must not make the job's only runner give up."""
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _cancel(work: WorkDir, runner: Runner | None) -> None:
    """Stop the tasks and record the job as cancelled; a stop signal meanwhile is the same stop."""
    try:
        with signals_deferred():
            if runner is not None:
                runner.stop_all()
            finish_cancelled(work.spec(), work, "cancelled")
    except KeyboardInterrupt:  # recorded during the clean-up, raised after it: nothing more to stop
        pass


if __name__ == "__main__":
    sys.exit(main())
