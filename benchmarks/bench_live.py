"""Live chain speed: Tango devices (Stitcher → Integrator(s) → Merger) against offline `integrate`.

On one simulated Lambda 2M acquisition it measures

* offline: ``pipeline_core.processing.offline.integrate_source`` (read + stitch + integrate + write), frames/s;
* live throughput: the same acquisition pushed through the running chain (real server processes, the
  embedded Tango database) with the Stitcher's ``Reintegrate``, from command to closed file, frames/s;
* live latency: the simulator writing parts in real time at a rate the chain can follow; the
  Merger's ``latency`` = part announced by the detector → its patterns merged (median), per part;

and prints the ratio live/offline (target ≥ 0.7) and the median latency (target < 1 s per part).

Run:  .venv/bin/python benchmarks/bench_live.py [--frames 200] [--integrators 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    import tango

    from pipeline_core.processing.integrate import IntegrationSettings
    from pipeline_core.processing.offline import integrate_source
    from pipeline_core.processing.sources import LambdaSource
    from pipeline_core.simulate import simulate_acquisition, write_calibration
    from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
    from tango_servers.embedded_db import EmbeddedDatabase, free_port
    from tango_servers.launcher import start_servers, stop_servers
    from tango_servers.registration import register

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frames-per-file", type=int, default=50)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument("--integrators", type=int, default=1)
    parser.add_argument("--latency-rate", type=float, default=5.0, help="simulator frame rate for the latency run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xrd-live-") as tmp_name:
        tmp = Path(tmp_name)
        poni, mask = write_calibration(tmp / "cal")
        acq = simulate_acquisition(
            tmp / "raw", frames=args.frames, frames_per_file=args.frames_per_file, calibration=(poni, mask)
        )
        settings = IntegrationSettings(poni, bins=args.bins, mask_path=mask)
        offline = integrate_source(LambdaSource.from_file(acq.module_files[0][0]), settings, tmp / "offline.nxs")

        db = EmbeddedDatabase(tmp / "db", free_port()).start()
        servers = []
        try:
            specs, names = layout_for(tmp, args.integrators)
            host, port = db.tango_host.split(":")
            register(specs, tango.Database(host, int(port)))
            servers = start_servers(specs, db.tango_host, tmp / "logs")

            def proxy(name):
                return tango.DeviceProxy(f"tango://{db.tango_host}/{name}")

            merger, stitcher, sim = proxy(MERGER), proxy(STITCHER), proxy(SIMULATOR)
            for name in names:
                dev = proxy(name)
                dev.poniPath, dev.maskPath, dev.bins = str(poni), str(mask), args.bins
                dev.Start()
            stitcher.Start()

            def wait_file(before: str, timeout_s: float = 900) -> str:
                deadline = time.monotonic() + timeout_s
                while merger.lastOutputFile == before:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no merged file after {timeout_s} s: {merger.status()}")
                    time.sleep(0.05)
                return merger.lastOutputFile

            t0 = time.perf_counter()
            stitcher.Reintegrate(str(acq.directory))
            wait_file("")
            live_fps = args.frames / (time.perf_counter() - t0)

            sim.FrameNumbers, sim.FramesPerFile, sim.rate = 60, 10, args.latency_rate
            before = merger.lastOutputFile
            sim.Start()
            wait_file(before)
            latency = merger.latency  # median over the scan's batches
        finally:
            stop_servers(servers)
            db.stop()

    print(
        f"frames {args.frames} (Lambda 2M 1833x1556, bitshuffle-LZ4), {args.bins} bins, "
        f"{args.integrators} Integrator(s)"
    )
    print(f"offline integrate          {offline.frames_per_second:7.1f} frames/s")
    ratio = live_fps / offline.frames_per_second
    print(f"live chain (Reintegrate)   {live_fps:7.1f} frames/s   ratio live/offline {ratio:.2f}")
    print(
        f"live latency at {args.latency_rate:g} Hz, 10-frame parts: median {latency:.3f} s "
        "(part announced -> its patterns merged)"
    )


if __name__ == "__main__":
    main()
