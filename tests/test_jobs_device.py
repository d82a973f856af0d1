"""The Stitcher's Reintegrate with ReintegrationBackend=slurm, end to end: real server processes on
the embedded database, real Slurm jobs; jobs/lastJobState read and seen as change events; CancelJob;
the job table found again (and a Slurm job followed to its end) by a restarted Stitcher."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import subprocess
import sys
from pathlib import Path

import pytest
import tango

from pipeline_core.cli import main as cli_main
from pipeline_core.formats.nexus import read_merged
from pipeline_core.jobs import slurm_commands as slurm
from pipeline_core.jobs.validate import JOB_ID_RE
from tango_servers.registration import DeviceSpec

from .helpers import SMALL_PONI, readme_block, wait_for, write_small_acquisition
from .test_jobs_local import JOB_TIMEOUT_S, assert_same_rows
from .test_jobs_slurm import SLURM_PROBLEM, SLURM_SKIP_REASON

#: under xdist the Slurm tests run one after the other on one worker: they hold the one-node cluster
#: (2 CPUs) with --exclusive blockers, so two at once would wait for each other's jobs
pytestmark = [pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_SKIP_REASON), pytest.mark.xdist_group("slurm")]

STITCHER = "test/jobs/stitcher"
BINS = 30
#: README's example, read from there (device name and path replaced by the test's)
README_SCRIPT = readme_block("**Reintegrate with a job backend.**", "python")


def _listen(trl: str, names: list[str], events, ready, stop) -> None:
    """In a spawned process (a client of its own): every change event of ``names`` of ``trl``."""
    proxy = tango.DeviceProxy(trl)

    def record(event) -> None:
        if not event.err:
            events.put((event.attr_name.split("/")[-1].lower(), event.attr_value.value))

    ids = [proxy.subscribe_event(name, tango.EventType.CHANGE_EVENT, record) for name in names]
    ready.set()
    stop.wait(600)
    for event_id in ids:
        proxy.unsubscribe_event(event_id)


class Events:
    def __init__(self, trl: str, names: list[str]):
        context = multiprocessing.get_context("spawn")
        self._queue, self._ready, self._stop = context.Queue(), context.Event(), context.Event()
        self._process = context.Process(target=_listen, args=(trl, names, self._queue, self._ready, self._stop))
        self.seen: list[tuple[str, object]] = []

    def __enter__(self) -> Events:
        self._process.start()
        assert self._ready.wait(60), "the listening process did not subscribe within 60 s"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._process.is_alive():
            self._drain()
            self._process.join(0.1)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def values(self, name: str) -> list:
        self._drain()
        return [v for n, v in self.seen if n == name.lower()]


@contextlib.contextmanager
def database(tmp: Path):
    from tango_servers.embedded_db import EmbeddedDatabase, free_port

    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    try:
        yield db.tango_host
    finally:
        db.stop()


def _blocker() -> int:
    """A job that takes the whole node: what is submitted next waits (PENDING) until it is cancelled."""
    proc = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--job-name=xrd-test-blocker", "--output=/dev/null",
         "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    job = int(proc.stdout.strip().split(";")[0])
    wait_for(lambda: any(j.state == "RUNNING" for j in slurm.squeue([job]) or []), 60, "the blocker running")
    return job


def _jobs(dev) -> dict[str, dict]:
    return {j["id"]: j for j in json.loads(dev.jobs)}


def test_reintegrate_on_slurm_through_the_stitcher(tmp_path):
    from tango_servers.launcher import start_servers, stop_servers
    from tango_servers.registration import register

    raw, out = tmp_path / "raw", tmp_path / "out"
    acq = write_small_acquisition(raw, n_parts=2, frames_per_part=3)
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    assert cli_main(["integrate", str(raw), "--poni", str(poni), "--bins", str(BINS), "-o", str(tmp_path / "ref")]) == 0
    reference = read_merged(tmp_path / "ref" / "scan_00001.nxs")
    properties = {
        "Trigger": ["file-attribute"],  # no detector: only Reintegrate brings work
        "ReintegrationBackend": ["slurm"],
        "DataRoots": [str(raw)],
        "CalibrationRoots": [str(tmp_path)],
        "OutputDirectory": [str(out)],
        "SlurmTasks": ["2"],
        "SlurmTimeLimit": ["00:10:00"],
    }
    specs = [DeviceSpec("XrdStitcher/jobs", "Stitcher", STITCHER, properties)]
    blocker = None
    with database(tmp_path) as host:
        h, port = host.split(":")
        register(specs, tango.Database(h, int(port)))
        servers = start_servers(specs, host, tmp_path / "logs")
        try:
            trl = f"tango://{host}/{STITCHER}"
            dev = tango.DeviceProxy(trl)
            dev.set_timeout_millis(10_000)
            with pytest.raises(tango.DevFailed, match="the chain has no PONI yet"):
                dev.Reintegrate(str(acq["files"][0]))
            dev.poniPath, dev.bins = str(poni), BINS
            assert dev.lastJobState == "" and json.loads(dev.jobs) == []
            with pytest.raises(tango.DevFailed, match="outside the allowed root"):
                dev.Reintegrate(str(poni))

            # 1. a job end to end, as README's script runs it, followed by events
            script = README_SCRIPT.replace("p02/xrd/stitcher", STITCHER).replace(
                "/gpfs/current/raw/ramp_00042_m1_part00000.nxs", str(acq["files"][4])  # any module file of it
            )
            with Events(trl, ["lastJobState", "jobs"]) as events:
                ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                     env={**os.environ, "TANGO_HOST": host}, timeout=JOB_TIMEOUT_S)  # fmt: skip
                assert ran.returncode == 0, ran.stderr
                job, state, output = ran.stdout.split()
                assert JOB_ID_RE.match(job) and (state, output) == ("complete", str(out / "scan_00001.nxs"))
                wait_for(lambda: f"{job} complete" in events.values("lastJobState"), JOB_TIMEOUT_S,
                         f"{job} complete as an event; seen {events.values('lastJobState')}")  # fmt: skip
            states = [v.split()[1] for v in events.values("lastJobState") if v.startswith(job)]
            assert states[0] in ("pending", "running") and states[-1] == "complete", states
            assert set(states) <= {"pending", "running", "merging", "complete"}
            pushed = [json.loads(v) for v in events.values("jobs")]
            assert pushed[-1][-1]["state"] == "complete" and pushed[-1][-1]["progress"] == 1.0
            entry = _jobs(dev)[job]
            assert entry["backend"].startswith("slurm:") and entry["frames_done"] == entry["frames_total"] == 6
            assert entry["output"] == str(out / "scan_00001.nxs") and entry["reason"] == ""
            assert dev.lastJobState == f"{job} complete"
            assert_same_rows(reference, read_merged(entry["output"]))

            # 2. CancelJob (the job waits behind a blocker; its Slurm jobs exist)
            blocker = _blocker()
            second = dev.Reintegrate(str(raw))
            wait_for(lambda: _jobs(dev)[second]["backend"].startswith("slurm:"), 60, "the job submitted to Slurm")
            assert _jobs(dev)[second]["state"] == "pending"
            wait_for(lambda: "1 reintegration job(s) not ended (slurm)" in dev.status(), 10, "Status to say so")
            assert dev.state() == tango.DevState.RUNNING
            assert dev.CancelJob(second) == f"{second} cancelling"
            wait_for(lambda: dev.lastJobState == f"{second} cancelled", JOB_TIMEOUT_S, "the job cancelled")
            cancelled = _jobs(dev)[second]
            assert cancelled["output"] == str(out / "scan_00001_v001.nxs")
            assert not Path(cancelled["output"]).exists() and not Path(f"{cancelled['output']}.part").exists()
            with pytest.raises(tango.DevFailed, match="has ended \\(cancelled\\); there is nothing to cancel"):
                dev.CancelJob(second)
            with pytest.raises(tango.DevFailed, match="not a job id"):
                dev.CancelJob("../../etc/passwd")

            # 3. a job submitted, the Stitcher restarted: the new process finds it and follows it to its end
            third = dev.Reintegrate(str(raw))
            wait_for(lambda: _jobs(dev)[third]["backend"].startswith("slurm:"), 60, "the third job submitted")
            stop_servers(servers)
            servers = start_servers(specs, host, tmp_path / "logs")
            dev = tango.DeviceProxy(trl)
            dev.set_timeout_millis(10_000)
            found = _jobs(dev)
            assert [found[j]["state"] for j in (job, second)] == ["complete", "cancelled"]
            assert found[third]["state"] == "pending" and dev.lastJobState == f"{third} pending"
            slurm.scancel([blocker])
            blocker = None
            wait_for(lambda: dev.lastJobState == f"{third} complete", JOB_TIMEOUT_S, "the third job complete")
            done = _jobs(dev)[third]
            assert done["output"] == str(out / "scan_00001_v001.nxs")  # the cancelled job gave its name back
            assert_same_rows(reference, read_merged(done["output"]))
            assert dev.state() in (tango.DevState.ON, tango.DevState.RUNNING), dev.status()
            assert len(list((out / ".xrd-jobs" / "table").glob("*.json"))) == 3  # the default JobsDirectory
        finally:
            if blocker is not None:
                slurm.scancel([blocker])
            stop_servers(servers)
