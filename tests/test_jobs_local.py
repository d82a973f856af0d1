"""Reintegration jobs on the local backend: planned ranges, results equal to `integrate` row for row,
failures named with their range and reason, cancel, and the CLI (`reintegrate`, `jobs`) as a user
runs it (real processes: the runner and its task processes are those the command starts)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline_core.cli import main as cli_main
from pipeline_core.formats.nexus import read_merged
from pipeline_core.jobs.config import JobsConfig, LocalConfig
from pipeline_core.jobs.manager import JobManager
from pipeline_core.jobs.outcome import range_failure
from pipeline_core.jobs.plan import open_checked_sources, plan_job
from pipeline_core.jobs.ranges import FrameLayout, plan_ranges
from pipeline_core.jobs.records import TaskRecord
from pipeline_core.jobs.slots import LocalSlots
from pipeline_core.jobs.spec import FrameRange, JobSpec, provenance_path
from pipeline_core.jobs.workdir import JOBS_FOLDER, WorkDir
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import REPO, SMALL_PONI, wait_for, write_small_acquisition

#: generous: a task process imports pyFAI (~2 s idle, much more on a loaded 2-core machine)
JOB_TIMEOUT_S = 180
COMPARED = ("data", "frame_number", "binning", "pos_map", "file_map", "files", "input_files", "failed_files",
            "failed_reasons", "failed_frames", "status", "radial_unit", "int_unit", "default_axis")  # fmt: skip


def assert_same_rows(expected: dict, got: dict) -> None:
    """Two merged files hold the same rows, axes, file maps, failures and status (read_merged)."""
    for key in COMPARED + (("sigma",) if "sigma" in expected else ()):
        a, b = expected[key], got[key]
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), key
        else:
            assert a == b, (key, a, b)


@pytest.fixture
def setup(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    acq = write_small_acquisition(raw, n_parts=3, frames_per_part=4)
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    config = JobsConfig(
        state_directory=tmp_path / "state",
        local=LocalConfig(workers=2),
        data_roots=(str(raw),),
        output_roots=(str(out),),
        calibration_roots=(str(tmp_path),),
    )
    return {"tmp": tmp_path, "raw": raw, "out": out, "acq": acq, "poni": poni, "config": config}


def leftovers(out: Path) -> list[str]:
    """Anything in the output folder that is not a result or its job description."""
    found = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    return sorted(str(p.relative_to(out)) for p in found if not p.name.endswith((".nxs", ".job.json")))


# -- planning -----------------------------------------------------------------------------------------------
def test_ranges_cover_every_frame_at_part_or_chunk_boundaries():
    parts = FrameLayout(((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)), by_part=True)
    by_part = plan_ranges(parts, 2)
    assert [(r.first, r.last, r.frames, r.parts) for r in by_part] == [(1, 4, 4, (0,)), (5, 12, 8, (1, 2))]
    shared = plan_ranges(parts, 5, chunk_size=2)  # more ranges than parts: cut inside parts at even offsets
    assert [(r.first, r.last) for r in shared] == [(1, 2), (3, 4), (5, 8), (9, 10), (11, 12)]
    # integrate's chunks of 8 (the default): parts of 4 frames are cut at their starts only
    assert [(r.first, r.last) for r in plan_ranges(parts, 5)] == [(1, 4), (5, 8), (9, 12)]
    assert sum(r.frames for r in shared) == 12 and all((r.first - 1) % 2 == 0 for r in shared)
    unknown = plan_ranges(FrameLayout(((1, 2), None, (5, 6)), by_part=True), 2)
    assert [r.parts for r in unknown] == [(0, 1), (1, 2)]  # a part unreadable now is read by every range
    assert plan_ranges(None, 4) == [FrameRange(0, 0, 2**31 - 1, 0, None)]  # images: one range
    assert len(plan_ranges(FrameLayout(((3, 2, 1),), by_part=True), 3)) == 1  # numbers not increasing


def test_a_job_description_round_trips_and_refuses_what_it_does_not_know(setup):
    source = open_checked_sources([setup["acq"]["files"][0]], IntegrationSettings(setup["poni"]), setup["config"])[0]
    spec = plan_job(source, IntegrationSettings(setup["poni"], bins=7), setup["out"], setup["config"], "local", 2)
    assert JobSpec.from_json(spec.to_json()) == spec
    assert spec.output == setup["out"] / "scan_00001.nxs" and (setup["out"] / "scan_00001.nxs.part").exists()
    for change, message in (({"version": 2}, "version 2 is not known"), ({"job_id": "../x"}, "not a job id"),
                            ({"type": "x"}, "not a reintegration job")):  # fmt: skip
        with pytest.raises(Exception, match=message):
            JobSpec.from_dict({**spec.to_dict(), **change})
    with pytest.raises(Exception, match="overlaps"):
        dataclasses.replace(spec, ranges=(FrameRange(0, 1, 6, 6), FrameRange(1, 5, 12, 6)))


def test_the_jobs_configuration_refuses_what_could_inject_or_could_not_run(tmp_path):
    from pipeline_core.errors import ConfigError
    from pipeline_core.jobs.config import jobs_config_from_dict
    from pipeline_core.jobs.slurm import batch_script
    from pipeline_core.jobs.validate import job_name

    good = jobs_config_from_dict({"backend": "slurm", "state_directory": "state", "local": {"workers": 3},
                                  "slurm": {"partition": "allcpu", "time_limit": "1-00:00:00", "tasks": 16}},
                                 tmp_path)  # fmt: skip
    assert good.state_directory == tmp_path / "state" and good.slurm.tasks == 16 and good.local.workers == 3
    bad = {"slurm": {"partition": "debug --wrap=reboot"}}
    with pytest.raises(ConfigError, match="slurm partition 'debug --wrap=reboot' is not a Slurm name"):
        jobs_config_from_dict(bad, tmp_path)
    with pytest.raises(ConfigError, match="slurm time limit '2h' is not a Slurm time"):
        jobs_config_from_dict({"slurm": {"time_limit": "2h"}}, tmp_path)
    with pytest.raises(ConfigError, match="slurm.python .* contains white space"):
        jobs_config_from_dict({"slurm": {"python": "/usr/bin/python3 -c evil"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)backends: unknown key.*local\.wrokers: unknown key"):
        jobs_config_from_dict({"backends": "x", "local": {"wrokers": 2}}, tmp_path)
    with pytest.raises(ConfigError, match="local.workers 0 is out of range; expected an integer 1 to 64"):
        jobs_config_from_dict({"local": {"workers": 0}}, tmp_path)
    assert job_name("a b;$(rm -rf ~)\n%j") == "xrd-a_b___rm_-rf_____j"
    script = batch_script("/opt/venv/bin/python", tmp_path / "work")
    assert script.startswith("#!/opt/venv/bin/python\n") and f"{str(tmp_path / 'work')!r}" in script
    with pytest.raises(Exception, match="contains a NUL, newline or %"):
        batch_script("/opt/venv/bin/python", tmp_path / "wo\nrk")


def test_paths_outside_the_roots_are_refused_before_anything_is_written(setup, tmp_path):
    elsewhere = write_small_acquisition(tmp_path / "elsewhere", n_parts=1)
    manager = JobManager(setup["config"])
    settings = IntegrationSettings(setup["poni"], bins=10)
    with pytest.raises(Exception, match="source .* outside the allowed root"):
        manager.submit([elsewhere["files"][0]], settings, setup["out"])
    with pytest.raises(Exception, match="output .* outside the allowed root"):
        manager.submit([setup["acq"]["files"][0]], settings, tmp_path / "not-out")
    assert not setup["out"].exists() and manager.list() == []


# -- results ------------------------------------------------------------------------------------------------
def test_a_local_job_equals_integrate_row_for_row_failures_included(setup):
    """q in 1/nm with sigma (the unit view's axis, data_errors), and a part whose module 3 is missing:
    the job lists the failure exactly as integrate does, and its status is incomplete like integrate's."""
    (setup["raw"] / "scan_00001_m3_part00001.nxs").unlink()
    common = ["--poni", str(setup["poni"]), "--bins", "25", "--unit", "q_nm^-1", "--error-model", "poisson"]
    assert cli_main(["integrate", str(setup["raw"]), *common, "-o", str(setup["tmp"] / "direct")]) == 1
    expected = read_merged(setup["tmp"] / "direct" / "scan_00001.nxs")
    settings = IntegrationSettings(setup["poni"], bins=25, unit="q_nm^-1", error_model="poisson")
    manager = JobManager(setup["config"])
    (record,) = manager.submit([setup["raw"]], settings, setup["out"])
    assert record.state == "pending" and record.frames_total == 12 and record.output.endswith("scan_00001.nxs")
    final = manager.wait(record.job_id, JOB_TIMEOUT_S)
    assert final.state == "incomplete", final
    assert final.frames_done == 8 and final.frames_failed == 4
    assert "scan_00001_m3_part00001.nxs is missing" in final.reason
    got = read_merged(final.output)
    assert_same_rows(expected, got)
    assert got["status"] == "incomplete" and got["failed_frames"] == ["5-8"]
    from .test_nxazint1d import nxazint1d_errors  # issue 19: a job's merge is an NXazint1d file too

    assert nxazint1d_errors(final.output) == 0
    provenance = JobSpec.read(provenance_path(final.output))
    assert provenance.settings == settings and str(provenance.output) == final.output
    assert len(provenance.ranges) == 2  # local.workers = 2
    assert leftovers(setup["out"]) == [] and not (setup["out"] / JOBS_FOLDER).exists()


def _submit_spec(manager: JobManager, spec: JobSpec) -> str:
    WorkDir(spec.work_dir).write_spec(spec)
    return manager.backend(spec.backend).submit(spec)


def test_a_range_that_fails_is_retried_once_then_the_job_fails_naming_the_range(setup):
    config = setup["config"]
    source = open_checked_sources([setup["raw"]], IntegrationSettings(setup["poni"]), config)[0]
    spec = plan_job(source, IntegrationSettings(setup["poni"], bins=10), setup["out"], config, "local", 1)
    bad = dataclasses.replace(spec, ranges=(*spec.ranges, FrameRange(1, 100, 120, 21)))  # a range the files lack
    manager = JobManager(config)
    job_id = _submit_spec(manager, bad)
    final = manager.wait(job_id, JOB_TIMEOUT_S)
    assert final.state == "failed"
    reason = (
        "range 1 (frames 100-120) failed after 2 attempts: no frame of scan_00001 has a number in 100-120; "
        "they hold frames 1-12"
    )
    # range 0 may still be running when range 1 has failed twice: the job then says it was cut short too
    assert final.reason in (reason, reason + "; 1 more range(s) did not finish"), final.reason
    record = WorkDir(spec.work_dir).task(1)
    assert record is not None and record.state == "failed" and len(record.attempts) == 2
    assert not Path(spec.output).exists() and not Path(f"{spec.output}.part").exists()
    assert [p.name for p in spec.work_dir.glob("range_*.nxs*")] == []  # range 0's partial removed too
    assert manager.list()[-1].state == "failed"  # another look agrees


def test_a_corrupt_acquisition_fails_its_tasks_with_the_reader_s_reason(setup):
    config = setup["config"]
    acq = write_small_acquisition(setup["raw"], stem="one_00001", n_parts=1, frames_per_part=16)
    source = open_checked_sources([acq["files"][0]], IntegrationSettings(setup["poni"]), config)[0]
    spec = plan_job(source, IntegrationSettings(setup["poni"], bins=10), setup["out"], config, "local", 2)
    assert [(r.first, r.last) for r in spec.ranges] == [(1, 8), (9, 16)]  # one part, shared at a chunk boundary
    for f in acq["files"]:  # overwritten after planning: HDF5 no more
        f.write_bytes(b"\x89HDF garbage " * 100)
    manager = JobManager(config)
    final = manager.wait(_submit_spec(manager, spec), JOB_TIMEOUT_S)
    assert final.state == "failed"
    first = r"range [01] \(frames (1-8|9-16)\) failed after 2 attempts: no part of one_00001 could be opened"
    assert re.match(first, final.reason), final.reason  # whichever of the two failed first
    assert "cannot be opened as HDF5" in final.reason and "1 more range(s) did not finish" in final.reason
    assert not Path(spec.output).exists() and not Path(f"{spec.output}.part").exists()


# -- jobs whose ranges are running: cancelled, killed (a range frozen with SIGSTOP where the test must be sure
# -- it meets a range being written) -------------------------------------------------------------------------
def long_acquisition(setup) -> dict:
    """2 parts x 1000 frames (``long_00001`` in the raw folder): two ranges of 1000 frames that take seconds,
    each writing its partial file ``range_00N.nxs.part`` meanwhile."""
    return write_small_acquisition(setup["raw"], stem="long_00001", n_parts=2, frames_per_part=1000)


def running_partials(work: WorkDir) -> list[int]:
    """Ranges whose partial file is being written (``range_00N.nxs.part``)."""
    return sorted(int(p.name[len("range_") : len("range_") + 3]) for p in work.path.glob("range_*.nxs.part"))


def freeze_running_ranges(work: WorkDir, count: int, frozen: dict[int, int]) -> None:
    """SIGSTOP the task of each range as soon as its partial file appears, until ``count`` are frozen
    (``frozen``: index -> pid, the caller's, so that it can always let them go again)."""

    def more() -> bool:
        for index in running_partials(work):
            record = work.task(index)
            if index not in frozen and record is not None and len(frozen) < count:
                os.kill(record.pid, signal.SIGSTOP)
                frozen[index] = record.pid
        return len(frozen) >= count

    wait_for(more, JOB_TIMEOUT_S, f"{count} range(s) writing their partial files")
    for pid in frozen.values():  # SIGSTOP takes effect when the task next enters the kernel: wait for it, so that
        # a signal sent from now on waits (a signal that arrived before would be handled on the way to stopping)
        wait_for(lambda pid=pid: process_state(pid) == "T", 60, f"task {pid} stopped")


def process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat`` (``T``: stopped), ``-`` for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "-"


def thaw(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits for (frozen) process ``pid`` to run again (/proc/PID/status)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending >> (signum - 1) & 1)


def wait_signal_pending(pid: int, signum: int, what: str, work: WorkDir) -> None:
    """Wait until ``signum`` waits for frozen ``pid``; on a timeout say what the process and the runner did."""
    try:
        wait_for(lambda: signal_pending(pid, signum), 60, what)
    except AssertionError as exc:
        try:
            state = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith(("State", "PPid", "SigPnd", "ShdPnd", "SigCgt"))]  # fmt: skip
        except OSError:
            state = ["gone"]
        log = (work.path / "runner.log").read_text()[-2000:] if (work.path / "runner.log").exists() else "-"
        raise AssertionError(f"{exc}; process {pid}: {state}; runner.log: {log}") from None


def job_processes(work: WorkDir) -> list[str]:
    """Processes (runner, tasks) whose command line names the job's work folder, zombies left out."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmd = " ".join(proc.info["cmdline"] or ())
            if str(work.path) in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid}: {cmd}")
    return found


def nothing_comes_back(work: WorkDir, files, seconds: float = 5.0) -> None:
    """The job's processes end (a runner that has let its lock go may still be exiting); then for ``seconds``
    none is back and ``files()`` (what should be gone) stays empty."""
    wait_for(lambda: job_processes(work) == [], 60, f"the processes of job {work.path.name} ending")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert job_processes(work) == []
        assert files() == []
        time.sleep(0.2)


def test_a_cancelled_job_leaves_no_result_and_no_partial(setup):
    """Pending (every slot of the pool held): cancelled, its name given back. Then a job whose ranges are
    being written (range 0 frozen with its partial file open until the cancel's SIGTERM waits for it):
    cancelled, and for several seconds after no process of the job runs and no file comes back."""
    config, out = setup["config"], setup["out"]
    slots = LocalSlots(config.state_directory / "local-slots", config.local.workers)
    held = [slots.try_acquire() for _ in range(config.local.workers)]
    assert None not in held
    manager = JobManager(config)
    settings = IntegrationSettings(setup["poni"], bins=10)
    (waiting,) = manager.submit([setup["raw"]], settings, out)
    wait_for(lambda: manager.get(waiting.job_id).reason == "waiting for a free worker", 60, "the runner waiting")
    cancelled = manager.cancel(waiting.job_id)
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled")
    for fd in held:
        LocalSlots.release(fd)
    assert list(out.rglob("*")) == []  # the cancelled job gave its reserved name back
    acq = long_acquisition(setup)
    (running,) = manager.submit([acq["files"][0]], settings, out)
    work = WorkDir(running.work_dir)
    frozen: dict[int, int] = {}
    try:
        freeze_running_ranges(work, 1, frozen)
        ((index, pid),) = frozen.items()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cancelling = pool.submit(manager.cancel, running.job_id)
            wait_signal_pending(pid, signal.SIGTERM, "the cancel's SIGTERM reaching the task", work)
            assert work.path / f"range_{index:03d}.nxs.part" in work.path.glob("range_*.nxs.part")
            assert manager.store.load(running.job_id).state == "running"  # the cancel meets a running job
            thaw(frozen.values())
            cancelled = cancelling.result(timeout=JOB_TIMEOUT_S)
    finally:
        thaw(frozen.values())
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled")
    assert 0 <= cancelled.frames_done < 2000
    nothing_comes_back(work, lambda: sorted(out.rglob("*")))  # no result, no partial, no reservation, no folder
    assert manager.get(running.job_id).state == "cancelled"  # and the table keeps it
    with pytest.raises(Exception, match="not in the job table"):
        manager.cancel("20000101-000000-abcdef")


def test_a_killed_runner_stops_its_tasks_and_the_job_fails_once_they_are_gone(setup):
    """kill -9 of the local runner, both ranges frozen while being written: each task gets SIGTERM
    (PR_SET_PDEATHSIG) and cleans up when it runs again; until the last one is gone the job is not
    concluded (a task still writing), then it is failed naming the runner, with nothing left."""
    out = setup["out"]
    acq = long_acquisition(setup)
    manager = JobManager(setup["config"])
    (record,) = manager.submit([acq["files"][0]], IntegrationSettings(setup["poni"], bins=10), out)
    work = WorkDir(record.work_dir)
    frozen: dict[int, int] = {}
    try:
        freeze_running_ranges(work, 2, frozen)
        runner = int(work.pid_file.read_text())
        os.kill(runner, signal.SIGKILL)
        for pid in frozen.values():
            wait_signal_pending(pid, signal.SIGTERM, f"task {pid} told its runner died", work)
        assert manager.get(record.job_id).state == "running"  # range 1 still holds its partial file open
        thaw([frozen[0]])
        wait_for(lambda: not psutil.pid_exists(frozen[0]) or psutil.Process(frozen[0]).status() == "zombie", 60,
                 "range 0's task stopping")  # fmt: skip
        assert manager.get(record.job_id).state == "running", "concluded while range 1's task still runs"
        thaw([frozen[1]])
        final = manager.wait(record.job_id, JOB_TIMEOUT_S)
    finally:
        thaw(frozen.values())
    assert final.state == "failed"
    assert final.reason == (
        "the local runner stopped before the job ended (killed?): range 0 (frames 1-1000) was stopped "
        "(a stop signal); 1 more range(s) did not finish"
    ), final.reason
    assert [work.task(i).state for i in (0, 1)] == ["cancelled", "cancelled"]
    assert not Path(record.output).exists() and not Path(f"{record.output}.part").exists()  # the name is free
    nothing_comes_back(work, lambda: sorted(work.path.glob("range_*.nxs*")))


def test_a_task_killed_outright_fails_its_job_naming_the_range_and_the_signal(setup):
    """kill -9 of range 0's task while both ranges are written: the runner stops range 1 (frozen until its
    SIGTERM waits, so that it surely is still running), removes both partial files, gives the name back."""
    out = setup["out"]
    acq = long_acquisition(setup)
    manager = JobManager(setup["config"])
    (record,) = manager.submit([acq["files"][0]], IntegrationSettings(setup["poni"], bins=10), out)
    work = WorkDir(record.work_dir)
    frozen: dict[int, int] = {}
    try:
        freeze_running_ranges(work, 2, frozen)
        os.kill(frozen[0], signal.SIGKILL)
        wait_signal_pending(frozen[1], signal.SIGTERM, "the runner stopping range 1", work)
        thaw(frozen.values())
        final = manager.wait(record.job_id, JOB_TIMEOUT_S)
    finally:
        thaw(frozen.values())
    assert final.state == "failed"
    assert final.reason == (
        "range 0 (frames 1-1000): its task ended without finishing (killed by SIGKILL); "
        "1 more range(s) did not finish"
    ), final.reason
    assert not Path(record.output).exists() and not Path(f"{record.output}.part").exists()
    nothing_comes_back(work, lambda: sorted(work.path.glob("range_*.nxs*")))  # the killed task's .part too


def test_a_range_that_fails_once_then_succeeds_is_retried_and_the_job_says_so(setup):
    """Range 1's files unreadable at its first attempt (garbage where HDF5 was), whole again before the
    retry: the job completes, equal to `integrate` row for row, and its entry names the retried range."""
    config, raw, out = setup["config"], setup["raw"], setup["out"]
    assert cli_main(["integrate", str(raw), "--poni", str(setup["poni"]), "--bins", "20",
                     "-o", str(setup["tmp"] / "direct")]) == 0  # fmt: skip
    manager = JobManager(config)
    (spec,) = manager.plan([raw], IntegrationSettings(setup["poni"], bins=20), out)
    assert [(r.first, r.last, r.parts) for r in spec.ranges] == [(1, 4, (0,)), (5, 12, (1, 2))]
    broken = {f: f.read_bytes() for f in setup["acq"]["files"] if "_part00000" not in f.name}  # range 1's parts
    for f in broken:
        f.write_bytes(b"\x89HDF garbage " * 100)
    manager.start(spec)
    work = WorkDir(spec.work_dir)

    def first_attempt_failed() -> bool:
        task = work.task(1)
        return task is not None and len(task.attempts) == 1

    wait_for(first_attempt_failed, JOB_TIMEOUT_S, "range 1's first attempt failing")
    for f, data in broken.items():  # whole again (atomically) during the pause before the retry
        f.with_name(f.name + ".tmp").write_bytes(data)
        os.replace(f.with_name(f.name + ".tmp"), f)
    final = manager.wait(spec.job_id, JOB_TIMEOUT_S)
    assert (final.state, final.frames_done, final.frames_failed) == ("complete", 12, 0), final.reason
    assert final.reason == (
        "range 1 (frames 5-12) succeeded on attempt 2 (attempt 1 failed: no frame of scan_00001 has a number in "
        "5-12; they hold frames 1-4)"
    ), final.reason
    assert manager.list()[-1].reason == final.reason  # what `jobs` shows
    assert_same_rows(read_merged(setup["tmp"] / "direct" / "scan_00001.nxs"), read_merged(final.output))
    assert leftovers(out) == [] and not (out / JOBS_FOLDER).exists()


def test_a_range_stopped_at_its_time_limit_says_so_however_its_task_ended():
    """What Slurm says (TIMEOUT) names the cause, whether the task recorded the SIGTERM or never got going."""
    frame_range = FrameRange(1, 5, 8, 4)
    for record in (None, TaskRecord(1, state="running"), TaskRecord(1, state="cancelled")):
        assert range_failure(frame_range, record, "Slurm state TIMEOUT, TimeLimit") == (
            "range 1 (frames 5-8): its task was stopped at its time limit (Slurm state TIMEOUT, TimeLimit); "
            "raise slurm.time_limit"
        )
    stopped = range_failure(frame_range, TaskRecord(1, state="cancelled"))
    assert stopped == "range 1 (frames 5-8) was stopped (a stop signal)"  # without it: a stop, cause unknown


# -- the command line, as a user runs it ----------------------------------------------------------------------
def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline_core.cli", *args], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip


def test_reintegrate_and_jobs_on_the_command_line(setup):
    tmp, raw, out, poni = setup["tmp"], setup["raw"], setup["out"], setup["poni"]
    jobs_config = tmp / "jobs.yaml"
    jobs_config.write_text(
        f"state_directory: {tmp / 'state'}\nlocal:\n  workers: 2\ndata_roots: [{raw}]\noutput_roots: [{out}]\n"
    )
    env = {**os.environ, "XRD_PIPELINE_JOBS_CONFIG": str(jobs_config)}
    options = ["--poni", str(poni), "--bins", "30", "-o", str(out)]
    assert cli_main(["integrate", str(raw), *options]) == 0  # out/scan_00001.nxs: the reference
    submitted = run_cli("reintegrate", str(raw / "scan_00001_m2_part00001.nxs"), *options, env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()  # printed at once: the job id, alone on stdout
    assert submitted.stderr.startswith(f"scan_00001: job {job_id} submitted (local, 12 frames); result {out}/")
    watched = run_cli("jobs", "--watch", env=env)  # one table every 2 s until no job runs
    assert watched.returncode == 0, watched.stderr
    tables = watched.stdout.strip().split("\n\n")
    last = tables[-1].splitlines()
    assert last[0].split() == ["ID", "BACKEND", "STATE", "FRAMES", "OUTPUT", "REASON"]
    assert last[1].split() == [job_id, "local", "complete", "12/12", str(out / "scan_00001_v001.nxs")]
    waited = run_cli("reintegrate", str(raw), *options, "--wait", env=env)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == str(out / "scan_00001_v002.nxs")
    assert "complete: 12 frames integrated" in waited.stderr
    listed = json.loads(run_cli("jobs", "--json", env=env).stdout)
    assert [(j["state"], j["frames_done"], j["progress"]) for j in listed] == [("complete", 12, 1.0)] * 2
    reference = read_merged(out / "scan_00001.nxs")
    for name in ("scan_00001_v001.nxs", "scan_00001_v002.nxs"):
        assert_same_rows(reference, read_merged(out / name))
    refused = run_cli("reintegrate", str(tmp / "small.poni"), *options, env=env)
    assert refused.returncode == 2
    assert "xrd-pipeline reintegrate: error: source" in refused.stderr and "outside the allowed root" in refused.stderr
    cancel = run_cli("jobs", "--cancel", job_id, env=env)
    assert cancel.returncode == 2 and f"job {job_id} has ended (complete); there is nothing to cancel" in cancel.stderr
    assert leftovers(out) == []


# -- a detached runner outlives whatever stops the command that submitted it (issue 17, item 9) -----------------
def _jobs_yaml(setup) -> dict:
    tmp, raw, out = setup["tmp"], setup["raw"], setup["out"]
    jobs_config = tmp / "jobs.yaml"
    jobs_config.write_text(
        f"state_directory: {tmp / 'state'}\nlocal:\n  workers: 2\ndata_roots: [{raw}]\noutput_roots: [{out}]\n"
    )
    return {**os.environ, "XRD_PIPELINE_JOBS_CONFIG": str(jobs_config)}


def test_sighup_to_a_waiting_reintegrate_leaves_its_job_to_complete(setup):
    """Both pool slots held (as by two other jobs); `reintegrate --wait` in a terminal that hangs up: the
    terminal's SIGHUP goes to its foreground process group, and a stray one to the runner itself."""
    config, raw, out, poni = setup["config"], setup["raw"], setup["out"], setup["poni"]
    slots = LocalSlots(config.state_directory / "local-slots", config.local.workers)
    held = [slots.try_acquire() for _ in range(config.local.workers)]
    assert None not in held
    manager = JobManager(config)
    cli = subprocess.Popen(
        [sys.executable, "-m", "pipeline_core.cli", "reintegrate", str(raw), "--poni", str(poni), "--bins", "30",
         "-o", str(out), "--wait"],
        env=_jobs_yaml(setup), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )  # fmt: skip
    try:
        wait_for(lambda: [r.reason for r in manager.list()] == ["waiting for a free worker"], 60, "the job waiting")
        (record,) = manager.list()
        runner = int(WorkDir(record.work_dir).pid_file.read_text())
        # the CLI waits once it has said the job is submitted (a hang-up before stops the submission)
        submitted = cli.stderr.readline()
        assert f"job {record.job_id} submitted" in submitted, submitted
        os.killpg(cli.pid, signal.SIGHUP)  # the terminal closes
        _, err = cli.communicate(timeout=60)
        os.kill(runner, signal.SIGHUP)  # and a hang-up reaching the runner by any other way
    finally:
        for fd in held:
            LocalSlots.release(fd)
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 129, err
    assert f"stopped waiting; job {record.job_id} goes on" in err and "Traceback" not in err
    final = manager.wait(record.job_id, JOB_TIMEOUT_S)
    assert (final.state, final.reason, final.frames_done) == ("complete", "", 12)
    merged = read_merged(final.output)
    assert merged["status"] == "complete" and merged["frame_number"].tolist() == list(range(1, 13))
    assert Path(final.output) == out / "scan_00001.nxs" and leftovers(out) == []


def test_a_look_at_the_lock_does_not_make_a_starting_runner_give_up(setup):
    """`lock_held` (a waiting `reintegrate --wait`, the Stitcher) takes the job's lock for an instant to see
    whether a runner holds it; a runner trying right then must wait for it, not leave the job unrun."""
    import fcntl
    import threading

    from pipeline_core.jobs import local_runner

    config = setup["config"]
    manager = JobManager(config)
    (spec,) = manager.plan([setup["raw"]], IntegrationSettings(setup["poni"], bins=10), setup["out"])
    work = WorkDir(spec.work_dir)
    looking = os.open(work.lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(looking, fcntl.LOCK_EX)
    done_looking = threading.Timer(0.3, os.close, (looking,))
    done_looking.start()
    try:
        rc = local_runner.main(
            [str(work.path), "--slots", str(config.state_directory / "local-slots"), "--workers", "2"]
        )
    finally:
        done_looking.join()
    assert rc == 0
    final = manager.get(spec.job_id)
    assert (final.state, final.frames_done) == ("complete", 12), final.reason


_ORPHAN = """
import os, sys
if os.fork() == 0:
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "pipeline_core.jobs.runner"])
"""


def test_the_suite_claims_only_the_orphans_it_started(setup):
    """A test session that ends kills the processes it left behind; orphans (re-parented to init) of
    another session or of a user, such as a detached job runner, are not its own (it killed them)."""
    import psutil

    from .conftest import _SESSION_MARK, _leftover_processes

    def orphan(session: str) -> psutil.Process:
        subprocess.run([sys.executable, "-c", _ORPHAN], env={**os.environ, _SESSION_MARK[0]: session}, check=True)
        found: list[psutil.Process] = []

        def started() -> bool:
            found[:] = [
                p for p in psutil.process_iter(["cmdline", "environ"])
                if "pipeline_core.jobs.runner" in (p.info["cmdline"] or ())
                and (p.info["environ"] or {}).get(_SESSION_MARK[0]) == session
            ]  # fmt: skip
            return bool(found)

        wait_for(started, 30, f"the orphan of session {session}")
        return found[0]

    theirs, ours = orphan("another session"), orphan(_SESSION_MARK[1])
    try:
        claimed = {p.pid for p in _leftover_processes()}
        assert theirs.pid not in claimed
        assert ours.pid in claimed  # what this session leaves behind is still found
    finally:
        for p in (theirs, ours):
            p.kill()
