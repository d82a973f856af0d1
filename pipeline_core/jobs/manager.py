"""Jobs over every backend: submit, look up, list, cancel, wait — what the CLI and the Stitcher call.

One :class:`JobManager` per configuration; it holds no job in memory: the job table on disk is the
truth, so any number of processes (a ``jobs --watch``, the Stitcher, a restarted Stitcher) agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..processing.integrate import IntegrationSettings
from .backend import Backend, record_for
from .config import JobsConfig
from .local import LocalBackend
from .plan import absolute_settings, check_one_output, discard, open_checked_sources, plan_job
from .ranges import frame_layout
from .records import now_iso
from .slurm import SlurmBackend
from .spec import BACKENDS, JobSpec
from .store import JobRecord, JobStore
from .validate import JobError, check_job_id
from .workdir import WorkDir

BACKEND_CLASSES: dict[str, type[Backend]] = {"local": LocalBackend, "slurm": SlurmBackend}
#: seconds between two looks while waiting for a job
WAIT_POLL_S = 0.5


class JobManager:
    def __init__(self, config: JobsConfig):
        self.config = config
        self.store = JobStore(config.state_directory)
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str | None = None) -> Backend:
        name = name or self.config.backend
        if name not in BACKENDS:
            raise JobError(f"backend {name!r} is unknown; expected one of {', '.join(BACKENDS)}")
        if name not in self._backends:
            self._backends[name] = BACKEND_CLASSES[name](self.config, self.store)
        return self._backends[name]

    def plan(
        self,
        paths: Sequence[str | Path],
        settings: IntegrationSettings,
        output: str | Path,
        backend: str | None = None,
        dataset: str | None = None,
        engine: str | None = None,
        modules: Sequence[int] | None = None,
    ) -> list[JobSpec]:
        """Check and plan one job per acquisition of ``paths`` (names reserved, entries saved as pending);
        nothing runs until :meth:`start`. Every refusal (roots, unreadable files, bad PONI/mask) comes
        from here, before anything is submitted. ``engine``: integrate's --engine (None: its default)."""
        runner = self.backend(backend)
        settings = absolute_settings(settings)
        sources = open_checked_sources(paths, settings, self.config, dataset, modules)
        check_one_output(Path(output), sources)
        specs: list[JobSpec] = []
        try:
            for source in sources:
                layout = frame_layout(source)
                frames = layout.total if layout is not None else 0
                spec = plan_job(
                    source, settings, Path(output), self.config, runner.name,
                    runner.ranges_for(frames), runner.threads_per_task(), dataset, engine,
                )  # fmt: skip
                specs.append(spec)
                self.store.save(record_for(spec))
        except BaseException:
            for spec in specs:
                self._abandon(spec, "not submitted")
            raise
        return specs

    def start(self, spec: JobSpec) -> JobRecord:
        """Submit a planned job to its backend; returns its entry. On a refusal the plan is undone (name
        given back, work folder removed), the entry says why, and JobError is raised."""
        try:
            self.backend(spec.backend).submit(spec)
        except BaseException as exc:
            self._abandon(spec, f"submission failed: {exc}")
            raise
        return self.store.load(spec.job_id)

    def _abandon(self, spec: JobSpec, reason: str) -> None:
        discard(spec.output, WorkDir(spec.work_dir))
        record = record_for(spec)
        record.state, record.reason, record.finished = "failed", reason, now_iso()
        self.store.save(record)

    def submit(
        self,
        paths: Sequence[str | Path],
        settings: IntegrationSettings,
        output: str | Path,
        backend: str | None = None,
        dataset: str | None = None,
        engine: str | None = None,
        modules: Sequence[int] | None = None,
    ) -> list[JobRecord]:
        """Plan and start one job per acquisition of ``paths``; returns their entries at once."""
        specs = self.plan(paths, settings, output, backend, dataset, engine, modules)
        records = []
        for i, spec in enumerate(specs):
            try:
                records.append(self.start(spec))
            except BaseException:
                for later in specs[i + 1 :]:
                    self._abandon(later, "not submitted: an earlier job of the same command was refused")
                raise
        return records

    def get(self, job_id: str) -> JobRecord:
        """The job's entry, up to date."""
        record = self.store.load(check_job_id(job_id))
        return self.backend(record.backend).state(job_id)

    def list(self) -> list[JobRecord]:
        """Every job of the table, up to date, oldest first."""
        found = []
        for record in self.store.all():
            try:
                found.append(self.backend(record.backend).state(record.job_id))
            except JobError as exc:  # one broken entry must not hide the others
                record.reason = str(exc)
                found.append(record)
        return found

    def cancel(self, job_id: str) -> JobRecord:
        record = self.store.load(check_job_id(job_id))
        return self.backend(record.backend).cancel(job_id)

    def wait(
        self,
        job_id: str,
        timeout_s: float | None = None,
        on_update: Callable[[JobRecord], None] | None = None,
    ) -> JobRecord:
        """Look at the job until it ends (``on_update`` after each look); JobError after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            record = self.get(job_id)
            if on_update is not None:
                on_update(record)
            if record.ended:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise JobError(f"job {job_id} did not end within {timeout_s:.0f} s (state {record.state})")
            time.sleep(WAIT_POLL_S)
