"""Jobs for a long-running process (the Stitcher): submitted and cancelled off the caller's thread, and
a fresh view of the job table every few seconds.

Why a thread: a Tango command must answer within the client's 3 s; ``sbatch`` on a busy controller,
a cancel that waits for Slurm's tasks to stop (up to ~30 s) and ``squeue`` for each running job do
not fit. :meth:`JobWatcher.submit` only plans (every refusal is raised to the caller at once) and
returns the job entries; the backend submission, cancels and refreshes happen on the watcher's own
thread, which calls ``on_change`` when the view changed. The view is the job table on disk, so a
restarted process finds every job it had submitted — Slurm's included — and follows them on.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..processing.integrate import IntegrationSettings
from .manager import JobManager
from .store import JobRecord
from .validate import JobError, check_job_id

log = logging.getLogger(__name__)

#: seconds between two refreshes of the running jobs
REFRESH_PERIOD_S = 2.0
#: jobs the view keeps (every running one, plus the latest ended ones up to this many in all)
MAX_SHOWN = 100


class JobWatcher:
    def __init__(
        self,
        manager: JobManager,
        on_change: Callable[[], None] = lambda: None,
        on_error: Callable[[str], None] = lambda message: None,
        period_s: float = REFRESH_PERIOD_S,
        thread_context: Callable = lambda: _NoContext(),
    ):
        self.manager = manager
        self._on_change = on_change
        self._on_error = on_error
        self._period_s = period_s
        self._thread_context = thread_context
        self._lock = threading.Lock()
        self._view: list[JobRecord] = []
        self._latest: str | None = None
        self._requests: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the caller's side ------------------------------------------------------------------------------
    def start(self) -> None:
        self._set_view(self._read_table())  # what the table holds now, before the first refresh
        self._thread = threading.Thread(target=self._run, name="xrd-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._requests.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def view(self) -> list[JobRecord]:
        """The jobs as of the last look, oldest first."""
        with self._lock:
            return list(self._view)

    def latest(self) -> JobRecord | None:
        """The job submitted last (by anyone, as the table says)."""
        with self._lock:
            by_id = {r.job_id: r for r in self._view}
            if self._latest in by_id:
                return by_id[self._latest]
            return self._view[-1] if self._view else None

    def submit(
        self,
        paths: Sequence[str | Path],
        settings: IntegrationSettings,
        output: str | Path,
        backend: str,
        dataset: str | None = None,
    ) -> list[JobRecord]:
        """Plan the jobs now (refusals raised here) and submit them on the watcher's thread."""
        specs = self.manager.plan(paths, settings, output, backend=backend, dataset=dataset)
        records = [self.manager.store.load(spec.job_id) for spec in specs]
        with self._lock:
            self._view = self._trim([r for r in self._view if r.job_id not in {x.job_id for x in records}] + records)
            self._latest = records[-1].job_id
        for spec in specs:
            self._requests.put(("start", spec))
        self._on_change()
        return records

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel on the watcher's thread; refused here (JobError) for an unknown or ended job."""
        record = self.manager.store.load(check_job_id(job_id))
        if record.ended:
            raise JobError(f"job {job_id} has ended ({record.state}); there is nothing to cancel")
        record.state = "cancelling"
        self._replace(record)
        self._requests.put(("cancel", job_id))
        self._on_change()
        return record

    # -- the watcher's thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        with self._thread_context():
            while not self._stop.is_set():
                try:
                    request = self._requests.get(timeout=self._period_s)
                except queue.Empty:
                    request = None
                if self._stop.is_set():
                    return
                try:
                    if request is not None:
                        self._handle(request)
                    self._refresh()
                except Exception as exc:  # never let the thread die: say it, try again next period
                    log.exception("job watcher")
                    self._on_error(f"jobs: {exc}")

    def _handle(self, request: tuple) -> None:
        kind, value = request
        try:
            if kind == "start":
                self._replace(self.manager.start(value))
            elif kind == "cancel":
                self._replace(self.manager.cancel(value))
        except JobError as exc:
            self._on_error(str(exc))
            if kind == "start":
                self._replace(self.manager.store.load(value.job_id))

    def _refresh(self) -> None:
        before = [r.to_dict() for r in self.view()]
        records = []
        for record in self._read_table():
            if not record.ended:
                try:
                    record = self.manager.get(record.job_id)
                except JobError as exc:
                    record.reason = str(exc)
            records.append(record)
        self._set_view(records)
        if [r.to_dict() for r in self.view()] != before:
            self._on_change()

    def _read_table(self) -> list[JobRecord]:
        return self._trim(self.manager.store.all())

    @staticmethod
    def _trim(records: list[JobRecord]) -> list[JobRecord]:
        """Every job not ended, and the latest ones, MAX_SHOWN in all (oldest first)."""
        if len(records) <= MAX_SHOWN:
            return records
        keep = {r.job_id for r in records if not r.ended} | {r.job_id for r in records[-MAX_SHOWN:]}
        return [r for r in records if r.job_id in keep][-max(MAX_SHOWN, len(keep)) :]

    def _set_view(self, records: list[JobRecord]) -> None:
        with self._lock:
            self._view = records

    def _replace(self, record: JobRecord) -> None:
        with self._lock:
            self._view = [record if r.job_id == record.job_id else r for r in self._view]
            if record.job_id not in {r.job_id for r in self._view}:
                self._view.append(record)


class _NoContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None
