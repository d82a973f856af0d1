"""Reintegration as real Slurm array jobs (sbatch → array tasks → merge with --dependency=afterok).

Needs Slurm's commands and a cluster: CI starts a one-node one (`scripts/slurm_local.sh start`, from
.ci/run); the tests are skipped only where `sbatch` is not installed at all."""

from __future__ import annotations

import dataclasses
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

pytestmark = pytest.mark.skipif(
    not slurm.slurm_available(),
    reason="sbatch is not installed on this machine (scripts/slurm_local.sh start sets up a one-node Slurm)",
)


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
    assert manager.get(record.job_id).state == "running"
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
