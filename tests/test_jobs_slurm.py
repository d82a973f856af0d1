"""Reintegration as real Slurm array jobs (sbatch → array tasks → merge with --dependency=afterok).

Needs a Slurm cluster that answers: scripts/test.sh (README's test command, and CI's) starts a one-node
one (`scripts/slurm_local.sh start`) where it can; elsewhere the tests are skipped, the reason saying why
(pytest -rs, as test.sh runs it, prints it in the summary)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.jobs import slurm_commands as slurm
from pipeline_core.jobs.config import JobsConfig, LocalConfig, SlurmConfig
from pipeline_core.jobs.manager import JobManager
from pipeline_core.jobs.plan import open_checked_sources, plan_job
from pipeline_core.jobs.spec import FrameRange, JobSpec, provenance_path
from pipeline_core.jobs.workdir import JOBS_FOLDER, WorkDir
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import SMALL_PONI, readme_block, wait_for, write_small_acquisition
from .test_jobs_local import JOB_TIMEOUT_S, assert_same_rows, leftovers

#: why no Slurm job can be submitted from here (None: a controller answers)
SLURM_PROBLEM = slurm.cluster_problem()
#: the skip reason: the problem, and why scripts/test.sh did not start a cluster (XRD_TEST_SLURM_SKIP)
SLURM_SKIP_REASON = f"no Slurm cluster: {SLURM_PROBLEM}; " + (
    os.environ.get("XRD_TEST_SLURM_SKIP") or "scripts/test.sh starts a one-node Slurm as root on Debian"
)
#: under xdist the Slurm tests run one after the other on one worker: they hold the one-node cluster
#: (2 CPUs) with --exclusive blockers, so two at once would wait for each other's jobs
pytestmark = [pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_SKIP_REASON), pytest.mark.xdist_group("slurm")]


#: an acquisition name a shell would run, and % that sbatch would expand: it reaches no command line
HOSTILE_STEM = "scan $(touch PWNED);`touch PWNED2` %x_00001"


@pytest.fixture
def setup(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    acq = write_small_acquisition(raw, stem=HOSTILE_STEM, n_parts=3, frames_per_part=4, compression="bslz4")
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    config = JobsConfig(
        state_directory=tmp_path / "state",
        local=LocalConfig(workers=2),
        slurm=SlurmConfig(tasks=3, time_limit="00:10:00"),
        data_roots=(str(raw),),
        output_roots=(str(out),),
    )
    return {"tmp": tmp_path, "raw": raw, "out": out, "acq": acq, "poni": poni, "config": config}


def _sbatch_blocker() -> int:
    """A job that takes the whole node, so that what is submitted next waits (PENDING) until it goes."""
    proc = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--job-name=xrd-test-blocker", "--output=/dev/null",
         "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    job = int(proc.stdout.strip().split(";")[0])
    wait_for(lambda: any(j.state == "RUNNING" for j in slurm.squeue([job]) or []), 60, "the blocker running")
    return job


#: the README's "Reintegration on Slurm" example, as written: its configuration (plus this test's state
#: folder and roots) and its reintegrate command
README_SLURM = readme_block("### Reintegration on Slurm", "bash")
README_JOBS_YAML = README_SLURM.split("cat > jobs.yaml <<'EOF'\n", 1)[1].split("EOF\n", 1)[0]
README_COMMAND = next(line for line in README_SLURM.splitlines() if line.startswith("xrd-pipeline reintegrate"))


def test_a_slurm_array_job_equals_the_local_backend_row_for_row(setup):
    """The local job through the core API; the Slurm one as README's "Reintegration on Slurm" runs it:
    `xrd-pipeline reintegrate raw --poni small.poni --bins 40 -o out --jobs-config jobs.yaml --wait`, in
    the folder of the (relative) PONI: the tasks, which run elsewhere (--chdir), still find it."""
    tmp = setup["tmp"]
    manager = JobManager(setup["config"])
    (local,) = manager.submit([setup["raw"]], IntegrationSettings(setup["poni"], bins=40), setup["out"])
    roots = f"data_roots: [{tmp / 'raw'}]\noutput_roots: [{tmp / 'out'}]\n"
    (tmp / "jobs.yaml").write_text(README_JOBS_YAML + f"state_directory: {tmp / 'state'}\n" + roots)
    command = README_COMMAND.split()[1:]
    assert command == ["reintegrate", "raw", "--poni", "small.poni", "--bins", "40", "-o", "out", "--jobs-config",
                       "jobs.yaml", "--wait"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "pipeline_core.cli", *command], cwd=tmp, capture_output=True,
                          text=True, timeout=JOB_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr
    array = manager.list()[-1]
    assert array.backend == "slurm" and set(array.native) == {"array", "merge", "fail"}
    assert done.stdout.strip() == array.output == str(tmp / "out" / f"{HOSTILE_STEM}_v001.nxs")
    assert f"job {array.job_id} submitted (slurm:{array.native['array']}, 12 frames)" in done.stderr
    assert f"job {array.job_id} complete: 12 frames integrated" in done.stderr
    local_final = manager.wait(local.job_id, JOB_TIMEOUT_S)
    assert local_final.state == "complete" and Path(local_final.output).name == f"{HOSTILE_STEM}.nxs"
    assert_same_rows(read_merged(local_final.output), read_merged(array.output))
    assert read_merged(array.output)["frame_number"].tolist() == list(range(1, 13))
    provenance = JobSpec.read(provenance_path(array.output))
    assert provenance.backend == "slurm" and provenance.settings.poni_path == setup["poni"]
    assert [(r.first, r.last, r.parts) for r in provenance.ranges] == [(1, 4, (0,)), (5, 8, (1,)), (9, 12, (2,))]
    tasks = {j.tasks[0]: j.state for j in slurm.squeue([int(array.native["array"])]) or [] if j.tasks}
    assert tasks == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}  # three real array tasks
    names = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(array.native["array"]), "-o", "%j"],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert set(names) == {"xrd-scan___touch_PWNED___touch_PWNED2___x_00001"}
    assert not list(tmp.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert leftovers(setup["out"]) == [] and not (setup["out"] / JOBS_FOLDER).exists()


def test_a_cancelled_slurm_job_leaves_no_result_and_removes_its_partials(setup):
    """Range 0 done (its partial on disk), range 1 held by Slurm: cancel removes the partial, gives the
    reserved name back, and no file appears under the final name."""
    manager = JobManager(setup["config"])
    blocker = _sbatch_blocker()
    try:
        (record,) = manager.submit([setup["raw"]], IntegrationSettings(setup["poni"], bins=40), setup["out"],
                                   backend="slurm")  # fmt: skip
        array = int(record.native["array"])
        subprocess.run(["scontrol", "hold", f"{array}_1", f"{array}_2"], check=True, timeout=30)
        assert manager.get(record.job_id).state == "pending"
    finally:
        slurm.scancel([blocker])
    work = WorkDir(record.work_dir)
    wait_for(lambda: work.task(0) is not None and work.task(0).state == "done", JOB_TIMEOUT_S, "range 0 done")
    assert work.partial(0).exists() and Path(f"{record.output}.part").exists()
    # Slurm's view (squeue) follows the task's own record a moment later: "pending" until it does
    wait_for(lambda: manager.get(record.job_id).state == "running", 60, "the job running (range 0 done)")
    cancelled = manager.cancel(record.job_id)
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled")
    assert not Path(record.output).exists() and not Path(f"{record.output}.part").exists()
    assert not work.path.exists() and leftovers(setup["out"]) == []
    assert not any(j.active for j in slurm.squeue([array, *map(int, record.native.values())]) or [])
    assert manager.get(record.job_id).state == "cancelled"  # the table keeps it


def test_a_slurm_task_that_fails_is_reported_with_its_range_and_reason(setup):
    config = setup["config"]
    source = open_checked_sources([setup["raw"]], IntegrationSettings(setup["poni"]), config)[0]
    spec = plan_job(source, IntegrationSettings(setup["poni"], bins=10), setup["out"], config, "slurm", 1)
    bad = dataclasses.replace(spec, ranges=(*spec.ranges, FrameRange(1, 500, 600, 101)))
    WorkDir(bad.work_dir).write_spec(bad)
    manager = JobManager(config)
    job_id = manager.backend("slurm").submit(bad)
    t0 = time.monotonic()
    final = manager.wait(job_id, JOB_TIMEOUT_S)
    assert final.state == "failed", final
    assert final.reason == (
        f"range 1 (frames 500-600) failed after 2 attempts: no frame of {HOSTILE_STEM} has a number in 500-600; "
        "they hold frames 1-12"
    ), final.reason
    work = WorkDir(bad.work_dir)
    assert len(work.task(1).attempts) == 2 and work.task(0).state in ("done", "cancelled")  # stopped, if still running
    assert not Path(bad.output).exists() and not Path(f"{bad.output}.part").exists()
    assert list(work.path.glob("range_*.nxs*")) == []  # range 0's partial removed
    assert sorted(p.name for p in work.path.glob("slurm-*.out"))  # the task logs stay, for the operator
    assert time.monotonic() - t0 < JOB_TIMEOUT_S


def _scontrol_fields(job_id: int) -> dict[str, str]:
    """``scontrol -o show job``'s fields of one job (Slurm keeps them a while after it ended)."""
    text = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True,
                          check=True, timeout=30).stdout  # fmt: skip
    return dict(field.split("=", 1) for field in text.split() if "=" in field)


def _slurm_states(record) -> dict[str, list[str]]:
    """Slurm's final state of each of the job's three submissions (the array's per task, in task order)."""
    jobs = slurm.squeue([int(v) for v in record.native.values()]) or []
    found: dict[str, list[str]] = {}
    for key, job_id in record.native.items():
        lines = sorted((j.tasks, j.state) for j in jobs if j.job_id == int(job_id))
        found[key] = [state for _, state in lines]
    return found


def _ended(records) -> bool:
    ids = [int(v) for r in records for v in r.native.values()]
    return not any(j.active for j in slurm.squeue(ids) or [])


def test_slurm_jobs_that_nobody_watches_finish_and_clean_up_by_themselves(setup):
    """A job that succeeds and one whose range 1 fails, submitted and never looked at (no refresh, no wait:
    looking is what also cancels and cleans up). Slurm alone runs the merge of one and the clean-up of the
    other and drops the other submission of each (--kill-on-invalid-dep): no partial file is left, the
    result is in place, and the failed job's name is free."""
    config, out = setup["config"], setup["out"]
    manager = JobManager(config)
    settings = IntegrationSettings(setup["poni"], bins=20)
    blocker = _sbatch_blocker()  # everything waits while the submissions are read back
    try:
        (good,) = manager.submit([setup["raw"]], settings, out, backend="slurm")  # submitting looks at nothing
        source = open_checked_sources([setup["raw"]], settings, config)[0]
        spec = plan_job(source, settings, out, config, "slurm", 1)
        failing = dataclasses.replace(spec, ranges=(*spec.ranges, FrameRange(1, 500, 600, 101)))
        WorkDir(failing.work_dir).write_spec(failing)
        manager.backend("slurm").submit(failing)
        bad = manager.store.load(failing.job_id)  # the table entry as written: no refresh
        for record in (good, bad):
            array = record.native["array"]
            for key, condition in (("merge", "afterok"), ("fail", "afternotok")):
                fields = _scontrol_fields(record.native[key])
                assert fields["Dependency"].startswith(f"{condition}:{array}_*"), (key, fields["Dependency"])
                assert fields["KillOInInvalidDependent"] == "Yes", key
    finally:
        slurm.scancel([blocker])
    wait_for(lambda: _ended([good, bad]), JOB_TIMEOUT_S, "the six Slurm jobs ending")
    assert _slurm_states(good) == {"array": ["COMPLETED"] * 3, "merge": ["COMPLETED"], "fail": ["CANCELLED"]}
    assert _slurm_states(bad) == {"array": ["COMPLETED", "FAILED"], "merge": ["CANCELLED"], "fail": ["COMPLETED"]}
    good_work, bad_work = WorkDir(good.work_dir), WorkDir(bad.work_dir)
    assert good_work.result().state == "complete" and Path(good.output).exists()
    merged = read_merged(good.output)
    assert merged["status"] == "complete" and merged["frame_number"].tolist() == list(range(1, 13))
    failed = bad_work.result()
    reason = (
        f"range 1 (frames 500-600) failed after 2 attempts: no frame of {HOSTILE_STEM} has a number in 500-600; "
        "they hold frames 1-12"
    )
    assert (failed.state, failed.reason) == ("failed", reason)
    for work in (good_work, bad_work):
        assert list(work.path.glob("range_*.nxs*")) == []  # every partial file removed, by Slurm's jobs alone
    assert not Path(bad.output).exists() and not Path(f"{bad.output}.part").exists()  # the name is free
    assert not Path(f"{good.output}.part").exists()
    after = {r.job_id: (r.state, r.reason) for r in manager.list()}  # the first look agrees
    assert after == {good.job_id: ("complete", ""), bad.job_id: ("failed", reason)}
    assert not good_work.path.exists() and sorted(p.name for p in bad_work.path.glob("slurm-*.out"))


def test_a_slurm_task_past_its_time_limit_fails_the_job_saying_so(setup, tmp_path):
    """Range 1's task never gets going (its interpreter, a wrapper, sleeps) and Slurm stops it at the
    one-minute time limit. Nobody watches: the clean-up job asks Slurm how the task ended and says so."""
    wrapper = tmp_path / "python-slow-range-1"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$SLURM_ARRAY_TASK_ID" = 1 ]; then exec sleep 600; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    slurm_config = SlurmConfig(tasks=3, time_limit="00:01:00", python=str(wrapper))
    manager = JobManager(dataclasses.replace(setup["config"], slurm=slurm_config))
    (record,) = manager.submit([setup["raw"]], IntegrationSettings(setup["poni"], bins=20), setup["out"],
                               backend="slurm")  # fmt: skip
    wait_for(lambda: _ended([record]), 300, "Slurm stopping range 1 at its time limit")  # 1 min + Slurm's checks
    assert _slurm_states(record) == {"array": ["COMPLETED", "TIMEOUT", "COMPLETED"], "merge": ["CANCELLED"],
                                     "fail": ["COMPLETED"]}  # fmt: skip
    work = WorkDir(record.work_dir)
    result = work.result()
    assert result.state == "failed"
    assert re.fullmatch(
        r"range 1 \(frames 5-8\): its task was stopped at its time limit \(Slurm state TIMEOUT[^)]*\); "
        r"raise slurm\.time_limit",
        result.reason,
    ), result.reason
    assert manager.get(record.job_id).reason == result.reason  # what `jobs` and the Stitcher show
    assert list(work.path.glob("range_*.nxs*")) == []
    assert not Path(record.output).exists() and not Path(f"{record.output}.part").exists()
