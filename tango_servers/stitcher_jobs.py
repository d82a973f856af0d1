"""Reintegration as jobs on the Stitcher: ``ReintegrationBackend`` local or slurm, ``jobs``,
``lastJobState``, ``CancelJob``.

A mixin for :class:`~tango_servers.stitcher.Stitcher` (which holds ``self.stage`` and declares the
``ReintegrationBackend`` property). With ``chain`` (the default) ``Reintegrate`` pushes the
acquisition through the live chain as before; with ``local`` or ``slurm`` it plans a job with the
chain's settings in force (refused at once with the reason: no PONI yet, a path outside
``DataRoots``, unreadable files) and returns the job's id while the job is submitted in the
background (:class:`pipeline_core.jobs.watch.JobWatcher`). The result goes to ``OutputDirectory``,
named like every reintegration (``<stem>_v001.nxs``, ...).

The job table lives in ``JobsDirectory`` (default ``<OutputDirectory>/.xrd-jobs/table``, beside the
jobs' work folders): a restarted Stitcher reads it and follows the jobs it had submitted, Slurm's
included. ``xrd-pipeline jobs`` shows the same jobs with ``state_directory`` set to that folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import tango
from tango.server import attribute, command, device_property

from pipeline_core.errors import PipelineError
from pipeline_core.jobs.config import DEFAULT_FRAMES_PER_TASK, JobsConfig, LocalConfig, SlurmConfig
from pipeline_core.jobs.manager import JobManager
from pipeline_core.jobs.store import JobRecord
from pipeline_core.jobs.watch import JobWatcher
from pipeline_core.jobs.workdir import JOBS_FOLDER

from .dev_failed import throw

#: ``ReintegrationBackend``: the live chain (today's behaviour), a local process pool, or Slurm
REINTEGRATION_BACKENDS = ("chain", "local", "slurm")
DEFAULT_REINTEGRATION_BACKEND = "chain"


def job_text(record: JobRecord | None) -> str:
    """``lastJobState``: ``<id> <state>`` of the job submitted last ("" before any)."""
    return "" if record is None else f"{record.job_id} {record.state}"


class StitcherJobs:
    """Reintegrate through a job backend, and the job table as attributes (with change events)."""

    JobsDirectory = device_property(
        dtype=str,
        default_value="",
        doc="folder of the job table (kept across restarts); empty: <OutputDirectory>/.xrd-jobs/table",
    )
    JobWorkers = device_property(
        dtype=int,
        default_value=LocalConfig.workers,
        doc="ReintegrationBackend=local: processes integrating at once on this host, over all its jobs",
    )
    JobFramesPerTask = device_property(
        dtype=int, default_value=DEFAULT_FRAMES_PER_TASK, doc="a job's frames are split in ranges of about this many"
    )
    SlurmPartition = device_property(dtype=str, default_value="", doc="sbatch --partition (empty: the cluster's)")
    SlurmAccount = device_property(dtype=str, default_value="", doc="sbatch --account (empty: the user's default)")
    SlurmTimeLimit = device_property(
        dtype=str, default_value=SlurmConfig.time_limit, doc="sbatch --time of each task (HH:MM:SS, D-HH:MM:SS)"
    )
    SlurmCpusPerTask = device_property(
        dtype=int, default_value=SlurmConfig.cpus_per_task, doc="sbatch --cpus-per-task: integration threads per task"
    )
    SlurmTasks = device_property(
        dtype=int, default_value=0, doc="array tasks of a job (0: one per JobFramesPerTask frames)"
    )
    SlurmPython = device_property(
        dtype=str, default_value="", doc="the Python that runs the tasks on the nodes (empty: this server's)"
    )

    def init_device(self) -> None:
        super().init_device()  # type: ignore[misc]
        self.job_watcher: JobWatcher | None = None
        self.reintegration_backend = str(self.ReintegrationBackend).strip().lower()  # type: ignore[attr-defined]
        if self.reintegration_backend not in REINTEGRATION_BACKENDS:
            self.set_fault(  # type: ignore[attr-defined]
                f"ReintegrationBackend {self.ReintegrationBackend!r} is unknown; "  # type: ignore[attr-defined]
                f"expected one of {', '.join(REINTEGRATION_BACKENDS)}"
            )
            self.reintegration_backend = DEFAULT_REINTEGRATION_BACKEND
        try:
            config = self.jobs_config()
        except PipelineError as exc:
            message = f"job configuration: {exc}"
            if self.reintegration_backend == "chain":
                self.report_error(message)  # type: ignore[attr-defined]
            else:
                self.set_fault(message)  # type: ignore[attr-defined]
            return
        self.job_watcher = JobWatcher(
            JobManager(config),
            on_change=self.publisher.wake,  # type: ignore[attr-defined]
            on_error=self.report_error,  # type: ignore[attr-defined]
            thread_context=tango.EnsureOmniThread,
        )
        self.job_watcher.start()

    def delete_device(self) -> None:
        if getattr(self, "job_watcher", None) is not None:
            self.job_watcher.stop(min(10.0, self.stop_deadline().left()))  # type: ignore[attr-defined]
        super().delete_device()  # type: ignore[misc]

    def jobs_config(self) -> JobsConfig:
        """The core's job configuration from this device's properties (JobError/ConfigError when bad)."""
        state = self.JobsDirectory or str(self._job_output_directory() / JOBS_FOLDER / "table")
        slurm = SlurmConfig(
            partition=self.SlurmPartition or None,
            account=self.SlurmAccount or None,
            time_limit=self.SlurmTimeLimit,
            cpus_per_task=int(self.SlurmCpusPerTask),
            tasks=int(self.SlurmTasks) or None,
            **({"python": self.SlurmPython} if self.SlurmPython else {}),
        )
        return JobsConfig(
            backend="slurm" if self.reintegration_backend == "slurm" else "local",
            state_directory=Path(state),
            frames_per_task=int(self.JobFramesPerTask),
            data_roots=tuple(self.DataRoots),  # type: ignore[attr-defined]
            output_roots=(str(self._job_output_directory()),),
            calibration_roots=tuple(self.CalibrationRoots),  # type: ignore[attr-defined]
            local=LocalConfig(workers=int(self.JobWorkers)),
            slurm=slurm,
        )

    def _job_output_directory(self) -> Path:
        return Path(self.OutputDirectory).absolute()  # type: ignore[attr-defined]

    # -- Reintegrate with ReintegrationBackend local/slurm (called by StitcherWork.Reintegrate) -----------------
    def submit_reintegration(self, path: str) -> str:
        """Plan a job for the acquisition at ``path`` with the chain's settings; its id (ids, space-separated,
        when the path holds several acquisitions). Refusals: XRD_InvalidValue with the reason."""
        where = "Stitcher.Reintegrate"
        if self.job_watcher is None:
            throw("XRD_InvalidValue", f"Reintegrate: no job backend: {self.dev_status()}", where)  # type: ignore
        settings = self.stage.settings.current()  # type: ignore[attr-defined]
        if settings is None:
            throw("XRD_InvalidValue", "Reintegrate: the chain has no PONI yet (write poniPath first)", where)
        try:
            records = self.job_watcher.submit(
                [path], settings, self._job_output_directory(), backend=self.reintegration_backend
            )
        except PipelineError as exc:
            throw("XRD_InvalidValue", f"Reintegrate: {exc}", where)
        return " ".join(r.job_id for r in records)

    def jobs_running(self) -> int:
        """Reintegration jobs not ended yet (the Stitcher is RUNNING and says so while there are any)."""
        watcher = self.job_watcher
        return sum(1 for r in watcher.view() if not r.ended) if watcher is not None else 0

    @attribute(
        dtype=str,
        label="Jobs",
        doc="reintegration jobs as JSON: [{id, backend, state, progress (0..1), frames_done, frames_failed, "
        "frames_total, output, reason, submitted}], oldest first; state pending, running, merging, complete, "
        "incomplete, failed, cancelling or cancelled",
    )
    def jobs(self) -> str:
        watcher = self.job_watcher
        return json.dumps([r.summary() for r in watcher.view()] if watcher is not None else [])

    @attribute(dtype=str, label="Last job state", doc="'<job id> <state>' of the job submitted last ('' before any)")
    def lastJobState(self) -> str:
        watcher = self.job_watcher
        return job_text(watcher.latest() if watcher is not None else None)

    @command(dtype_in=str, doc_in="a job id (see jobs)", dtype_out=str, doc_out="the job's id and state")
    def CancelJob(self, job_id: str) -> str:
        """Cancel a reintegration job: its tasks stopped, no file under its final name, partial files removed."""
        if self.job_watcher is None:
            throw("XRD_InvalidValue", "CancelJob: no job backend", "Stitcher.CancelJob")
        try:
            record = self.job_watcher.cancel(job_id.strip())
        except PipelineError as exc:
            throw("XRD_InvalidValue", f"CancelJob: {exc}", "Stitcher.CancelJob")
        return job_text(record)
