"""The ``slurm`` backend: an ``sbatch`` array job (one task per range), then the merge.

Three submissions per job, all with the configured partition, account, QOS and time limit::

    array  --array=0-N[%max] --cpus-per-task=C   task.py run     each range into its partial file
    merge  --dependency=afterok:ARRAY            task.py merge   the result, published when all succeeded
    fail   --dependency=afternotok:ARRAY         task.py fail    a task failed: partials removed, name given back

``--kill-on-invalid-dep=yes`` makes Slurm drop whichever of merge/fail can no longer run, so the job
finishes and cleans up without anybody watching. The batch script, ``task.py`` in the work folder,
is Python (its ``#!`` line is the configured interpreter): no shell is involved anywhere, and the
only values written into it are the work folder's path (checked) and our own words. State comes
from the tasks' records, ``squeue`` (``scontrol``/``sacct`` for what it no longer shows); cancel is
``scancel`` of the three.
"""

from __future__ import annotations

import time
from pathlib import Path

import pipeline_core

from . import slurm_commands as slurm
from .backend import Backend, apply_progress, apply_result, record_for, settled
from .outcome import failed_ranges, failure_reason, finish_cancelled, finish_failed, range_failure
from .records import read_json, write_json
from .spec import JobSpec
from .store import JobRecord
from .validate import JobError, check_script_path, job_name
from .workdir import WorkDir

#: seconds a cancel waits for the job's tasks to stop (Slurm's KillWait is 30 s by default)
CANCEL_TIMEOUT_S = 60.0
SCRIPT_NAME = "task.py"
#: the job's Slurm ids, in its work folder
IDS_FILE = "slurm_ids.json"
#: seconds a planned job may wait for its sbatch before it counts as never submitted
SUBMIT_GRACE_S = 600.0


def batch_script(python: str, work_dir: Path) -> str:
    """The batch script of a job: Python, run by sbatch's ``#!`` line, calling the task entry point."""
    check_script_path(python, "slurm.python")
    check_script_path(work_dir, "work folder")
    package_parent = str(Path(pipeline_core.__file__).resolve().parents[1])
    return (
        f"#!{python}\n"
        f"# xrd-pipeline reintegration job {work_dir.name}: written by pipeline_core.jobs.slurm; sbatch runs it\n"
        "import os\n"
        "import sys\n"
        "\n"
        'os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))\n'
        f"sys.path.insert(0, {package_parent!r})\n"
        "from pipeline_core.jobs.task import main  # noqa: E402\n"
        "\n"
        f"sys.exit(main([sys.argv[1], {str(work_dir)!r}, *sys.argv[2:]]))\n"
    )


class SlurmBackend(Backend):
    name = "slurm"

    def ranges_for(self, frames: int) -> int:
        if self.config.slurm.tasks is not None:
            return self.config.slurm.tasks
        return super().ranges_for(frames)

    def threads_per_task(self) -> int:
        return self.config.slurm.cpus_per_task

    def _options(self, name: str, work: WorkDir) -> list[str]:
        s = self.config.slurm
        options = [f"--job-name={name}", f"--chdir={work.path}", f"--time={s.time_limit}"]
        options += [f"--{key}={value}" for key, value in (("partition", s.partition), ("account", s.account),
                                                           ("qos", s.qos)) if value]  # fmt: skip
        return options

    def submit(self, spec: JobSpec) -> str:
        work = WorkDir(spec.work_dir)
        check_script_path(work.path, "work folder")
        script = work.path / SCRIPT_NAME
        script.write_text(batch_script(self.config.slurm.python, work.path))
        script.chmod(0o755)
        s = self.config.slurm
        n = len(spec.ranges)
        array_spec = f"0-{n - 1}" + (f"%{s.max_parallel}" if s.max_parallel else "")
        array = slurm.sbatch(
            self._options(job_name(spec.name), work)
            + [f"--array={array_spec}", f"--cpus-per-task={s.cpus_per_task}", f"--output={work.path}/slurm-%A_%a.out"],
            str(script),
            ["run"],
        )
        submitted = [array]
        ids: dict[str, int] = {}
        try:
            after = ["--cpus-per-task=1", "--kill-on-invalid-dep=yes", f"--output={work.path}/slurm-%j.out"]
            merge = slurm.sbatch(
                self._options(job_name(spec.name, "-merge"), work) + after + [f"--dependency=afterok:{array}"],
                str(script),
                ["merge"],
            )
            submitted.append(merge)
            fail = slurm.sbatch(
                self._options(job_name(spec.name, "-fail"), work) + after + [f"--dependency=afternotok:{array}"],
                str(script),
                ["fail"],
            )
            ids = {"array": array, "merge": merge, "fail": fail}
            write_json(work.path / IDS_FILE, ids)  # before the entry: whoever reads the entry finds them
        except (JobError, OSError):
            slurm.scancel(submitted)
            raise
        self.store.save(record_for(spec, ids))
        return spec.job_id

    @staticmethod
    def _ids(record: JobRecord) -> list[int]:
        return [int(record.native[k]) for k in ("array", "merge", "fail") if k in record.native]

    def _native(self, record: JobRecord, spec: JobSpec) -> tuple[list[slurm.SlurmJob], dict[int, str]]:
        """What Slurm says: its lines for the job, and per range a description of how its task ended."""
        jobs = slurm.squeue(self._ids(record)) or []
        return jobs, _per_task(jobs, int(record.native["array"]), spec)

    def refresh(self, record: JobRecord) -> JobRecord:
        work = WorkDir(record.work_dir)
        done = settled(self.store, record, work)
        if done is not None:
            return done
        spec = work.spec()
        if "array" not in record.native:  # the ids reach the work folder first (an entry saved meanwhile lacks them)
            record.native = dict(read_json(work.path / IDS_FILE) or {})
        if "array" not in record.native:  # planned, being submitted (by the process that planned it)
            if _age_s(work.spec_file) > SUBMIT_GRACE_S:
                return apply_result(record, finish_failed(spec, work, "it was planned but never submitted"), work)
            record.state, record.reason = "pending", "submitting"
            return record
        try:
            jobs, per_task = self._native(record, spec)
        except JobError as exc:  # the controller is unreachable: say so, conclude nothing
            record.reason = str(exc)
            return record
        result = work.result()  # the merge or clean-up may have finished meanwhile
        if result is not None:
            return apply_result(record, result, work)
        apply_progress(record, spec, work)
        if not any(job.active for job in jobs):  # nothing left to run and no result: it failed
            merge_state = slurm.scontrol_state(int(record.native["merge"])) or ""
            reason = failure_reason(spec, work, per_task)
            if reason.startswith("every range finished") and merge_state:
                reason = f"the merge (job {record.native['merge']}) ended without a result: {merge_state}"
            return apply_result(record, finish_failed(spec, work, reason), work)
        failed = failed_ranges(spec, work)
        if failed:  # the fail job will clean up once the other tasks end: stop them now
            slurm.scancel([int(record.native["array"])])
            frame_range, task = failed[0]
            record.state, record.reason = "running", range_failure(frame_range, task) + "; the job is failing"
            return record
        tasks = [work.task(r.index) for r in spec.ranges]
        merge_id = int(record.native["merge"])
        merging = any(j.job_id == merge_id and j.state == "RUNNING" for j in jobs)
        if merging or all(t is not None and t.state == "done" for t in tasks):
            record.state, record.reason = "merging", ""
        elif any(j.job_id == int(record.native["array"]) and j.state == "RUNNING" for j in jobs):
            record.state, record.reason = "running", ""
        else:
            waiting = [j for j in jobs if j.active and j.job_id == int(record.native["array"])]
            record.state = "pending"
            record.reason = waiting[0].describe() if waiting else ""
        return record

    def cancel(self, job_id: str) -> JobRecord:
        record = self.state(job_id)
        ended = self._ended_for_cancel(record)
        if ended is not None:
            return ended
        record.state = "cancelling"
        self.store.save(record)
        ids = self._ids(record)
        slurm.scancel(ids)
        deadline = time.monotonic() + CANCEL_TIMEOUT_S
        while time.monotonic() < deadline:
            jobs = slurm.squeue(ids) or []
            if not any(j.active for j in jobs):
                break
            time.sleep(0.5)
        work = WorkDir(record.work_dir)
        result = work.result()
        if result is None or result.state not in ("complete", "incomplete"):
            if work.exists():
                result = finish_cancelled(work.spec(), work, "cancelled")
        if result is not None:
            if result.state == "failed":  # the fail job ran first (the tasks it saw were the cancelled ones)
                result.state, result.reason = "cancelled", "cancelled"
            apply_result(record, result, work)
        else:
            record.state, record.reason = "cancelled", "cancelled"
        self.store.save(record)
        return record


def _per_task(jobs: list[slurm.SlurmJob], array: int, spec: JobSpec) -> dict[int, str]:
    """Per range, Slurm's description of its array task (``squeue``'s lines, else accounting's)."""
    per_task: dict[int, str] = {}
    for job in jobs:
        if job.job_id == array:
            for t in job.tasks:
                per_task[t] = job.describe()
    if not jobs:  # forgotten by squeue: accounting may still know
        accounted = slurm.sacct_states([array])
        for r in spec.ranges:
            if f"{array}_{r.index}" in accounted:
                per_task[r.index] = accounted[f"{array}_{r.index}"]
    return per_task


def array_task_states(work: WorkDir, spec: JobSpec) -> dict[int, str]:
    """What Slurm says of each array task of the job in ``work`` (empty when it was not a Slurm job or
    Slurm cannot be asked). The clean-up job asks it, so that a job that failed with nobody watching
    says why its tasks ended (a time limit) as a poller would."""
    ids = read_json(work.path / IDS_FILE)
    if not isinstance(ids, dict) or not str(ids.get("array", "")).isdigit():
        return {}
    array = int(ids["array"])
    try:
        return _per_task(slurm.squeue([array]) or [], array, spec)
    except JobError:
        return {}


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
