"""``xrd-pipeline demo``: the whole live pipeline on one machine, from nothing, then cleaned up.

1. a Tango database: the one of ``--tango-host``/``TANGO_HOST`` if it answers, else the embedded
   sqlite one, started now with its file in ``WORKDIR/tango-db``;
2. the devices of ``tango_db_setup/pipeline.yaml`` registered (idempotent);
3. one process per device server: simulator, Stitcher, Integrator(s), Merger, each listening on
   ``--endpoint`` (loopback by default; an embedded database started in step 1 listens there too);
4. a compression ramp written live by the simulator, integrated while it is written;
5. the merged NeXus file and its heatmap PNG, whose paths are printed;
6. every process stopped — also on error, on Ctrl-C, SIGTERM and SIGHUP (then the exit status is
   128 + the signal's number); servers and database stop each within a bound (SIGTERM, then
   SIGKILL), and if the demo itself is killed outright the kernel sends them SIGTERM.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import tango

from pipeline_core.heatmap import render_heatmap
from pipeline_core.progress import Progress
from pipeline_core.signals import signals_deferred

from .embedded_db import LOOPBACK_ADDRESS, check_local_address, database_answers, ensure_database
from .launcher import start_servers, stop_servers
from .registration import DEFAULT_FILE, load_layout, register

SIMULATOR, STITCHER, MERGER = "p02/xrd/lambda-sim", "p02/xrd/stitcher", "p02/xrd/merger"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def layout_for(workdir: Path, integrators: int, marker: str = "", rate: float | None = None, reflections: str = ""):
    """The demo's devices with ``integrators`` Integrators; ``marker`` (e.g. ``au``) makes the Merger
    follow its pressure (from ``reflections``, default all), ``rate`` (frames/s of the simulator) gives
    it the frame period for the compression rate (the simulator's files record no count_time)."""
    specs = load_layout(DEFAULT_FILE, state=workdir)
    names = [s.name for s in specs if s.klass == "Integrator"][:integrators]
    if len(names) < integrators:
        raise SystemExit(f"tango_db_setup/pipeline.yaml defines {len(names)} Integrators; asked for {integrators}")
    specs = [s for s in specs if s.klass != "Integrator" or s.name in names]
    merger = {"IntegratorDevices": names}
    if marker:
        merger["Marker"] = [marker]
    if reflections:
        merger["MarkerReflections"] = [reflections]
    if rate:
        merger["FramePeriod"] = [repr(1.0 / rate)]
    return [replace(s, properties={**s.properties, **merger}) if s.klass == "Merger" else s for s in specs], names


def pressure_line(merger, output: Path) -> str:
    """The scan's final pressure and compression rate as the Merger shows them (its file's last frame,
    gold on the Fei 2007 scale); when that frame has none, why, and the last frame that has one."""
    import h5py

    from pipeline_core.science.nexus_pressure import read_pressure

    with h5py.File(output, "r") as h5:
        if "processed/pressure" not in h5:
            return "pressure:    none (the Merger has no Marker)"
        series = read_pressure(h5)
    numbers, values, sigma = series["frame_number"], series["pressure"], series["pressure_errors"]
    rate = f"compression rate {merger.compressionRate:.2f} GPa/s"
    if math.isfinite(merger.pressure):
        return f"pressure:    {merger.pressure:.2f} ± {merger.pressureSigma:.2f} GPa at frame {numbers[-1]}; {rate}"
    good = [i for i in range(len(values)) if math.isfinite(values[i])]
    last = (f"last value {values[good[-1]]:.2f} ± {sigma[good[-1]]:.2f} GPa at frame {numbers[good[-1]]}"
            if good else "no frame has one")  # fmt: skip
    return f"pressure:    none at frame {numbers[-1]} ({series['reason'][-1]}); {last}; {rate}"


def demo_calibration(directory: Path) -> tuple[Path, Path]:
    """The simulation's PONI and mask in ``directory``, each written only when missing or different.

    Why: ``demo --workdir SAME`` resumes a scan an interrupted demo left open, with the settings it was
    queued with; a PONI written again (pyFAI stamps the date in a comment) or a mask saved again must
    stay the file it was, so nothing that watches the calibration sees a change that is none. Files are
    compared by what integration reads (:func:`poni_digest`, :func:`mask_digest`); a changed one is
    replaced atomically.
    """
    from pipeline_core.processing.integrate import mask_digest, poni_digest
    from pipeline_core.simulate import write_calibration

    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".calibration-", dir=directory))
    try:
        fresh = write_calibration(staging)
        return (
            _keep_or_replace(fresh[0], directory / fresh[0].name, poni_digest),
            _keep_or_replace(fresh[1], directory / fresh[1].name, mask_digest),
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _keep_or_replace(fresh: Path, target: Path, digest) -> Path:
    """``target`` untouched when it holds what ``fresh`` holds (by ``digest``), else ``fresh`` moved there."""
    if not (target.is_file() and digest(target) == digest(fresh)):
        os.replace(fresh, target)
    return target


def run_demo(
    workdir: Path,
    frames: int = 300,
    rate: float = 20.0,
    integrators: int = 2,
    tango_host: str | None = None,
    timeout_s: float = 600.0,
    endpoint: str = LOOPBACK_ADDRESS,
) -> Path:
    workdir = workdir.absolute()
    check_local_address(endpoint)  # before anything starts
    if tango_host is not None and not database_answers(tango_host):
        raise SystemExit(f"no Tango database answers at {tango_host}")
    servers, db = [], None
    try:
        tango_host, db = ensure_database(workdir / "tango-db", tango_host, host=endpoint)
        say(f"Tango database: {tango_host} ({'embedded, started now' if db else 'already running'})")
        host, port = tango_host.rsplit(":", 1)
        # gold 111 only: from mid-ramp the simulator's B1 sample (a = 5.40 Å, about √2 × gold's) lies on
        # gold 200 and 220 at once, where no majority can tell which line is the sample's (README)
        specs, integrator_names = layout_for(workdir, integrators, marker="au", rate=rate, reflections="111")
        for line in register(specs, tango.Database(host, int(port))):
            say(f"  {line}")
        poni, mask = demo_calibration(workdir / "calibration")
        say(f"starting {len({s.server for s in specs})} device servers on TANGO_HOST={tango_host} ...")
        servers = start_servers(specs, tango_host, workdir / "logs", endpoint=endpoint)

        def proxy(name):
            return tango.DeviceProxy(f"tango://{tango_host}/{name}")

        merger, stitcher, sim = proxy(MERGER), proxy(STITCHER), proxy(SIMULATOR)
        # the chain's settings, once: the Stitcher holds them and stamps them on every work item
        stitcher.poniPath, stitcher.maskPath = str(poni), str(mask)
        for name in integrator_names:
            proxy(name).Start()
        merger.Start()
        stitcher.Start()
        sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, 50, rate
        stem = sim.Start()
        say(
            f"acquiring {stem}: {frames} frames at {rate:g} Hz, integrated live by {len(integrator_names)} "
            f"Integrator(s) ..."
        )
        progress = Progress("merged", frames)
        deadline = time.monotonic() + timeout_s
        try:
            # wait for *this* scan's file (a Merger may also finish a scan it resumed from an earlier run)
            while not Path(merger.lastOutputFile).name.startswith(stem):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the scan was not complete after {timeout_s:.0f} s:\n{merger.status()}")
                progress(merger.framesProcessed, merger.framesFailed)
                time.sleep(0.2)
        finally:
            progress.close()
        output = Path(merger.lastOutputFile)
        say(
            f"{merger.framesProcessed} frames merged, {merger.framesFailed} failed; "
            f"median latency {merger.latency:.2f} s"
        )
        png = render_heatmap(output)
        print(f"merged file: {output}")
        print(f"heatmap:     {png}")
        print(pressure_line(merger, output))
        return output
    finally:
        with signals_deferred():  # a second Ctrl-C/SIGTERM must not cut the cleanup short
            if servers:
                say("stopping the device servers ...")
            try:
                stop_servers(servers)
            finally:  # a signal deferred inside stop_servers is raised when it returns: the DB still stops
                if db is not None:
                    db.stop()
