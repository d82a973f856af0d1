"""Offline integration speed: `xrd-pipeline integrate` end to end against bare pyFAI.

For each compression (bitshuffle-LZ4, DEFLATE) it simulates a Lambda 2M acquisition, then times

* bare pyFAI: ``AzimuthalIntegrator.integrate1d`` on the same stitched frames already in memory
  (same method, mask, corrections; pyFAI's default threading; first call — engine build — included);
* end to end: read + decompress + stitch + integrate + write the merged file
  (``pipeline_core.processing.offline.integrate_source``, engine build included),

and prints frames/s (whole run, and *steady*: after the first chunk, engine build excluded), CPU ms
a frame (every thread of this process) and the ratio end-to-end / bare, then the machine (cores,
memory bandwidth measured now, load average: this machine may be shared).

Run:  .venv/bin/python benchmarks/bench_offline.py [--frames 200] [--workers 1] [--engine auto|csr|pyfai]

(``benchmarks/bench_engine.py`` compares the engines, 1 and 2 workers and peak memory in one run.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_pyfai(source, settings, engine_mask) -> tuple[float, int]:
    import pyFAI

    frames = [f for chunk in source.chunks(16, print) for f in chunk.frames]
    ai = pyFAI.load(str(settings.poni_path))
    t0 = time.perf_counter()
    for frame in frames:
        ai.integrate1d(
            frame,
            settings.bins,
            unit=settings.unit,
            method=settings.method,
            mask=engine_mask,
            polarization_factor=settings.polarization_factor,
            correctSolidAngle=settings.correct_solid_angle,
        )
    return time.perf_counter() - t0, len(frames)


def main() -> None:
    import os

    try:
        from benchmarks.machine import describe
    except ImportError:  # run as a script: benchmarks/ itself is on the path
        from machine import describe  # type: ignore[no-redef]
    from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
    from pipeline_core.processing.offline import integrate_source
    from pipeline_core.processing.sources import LambdaSource
    from pipeline_core.simulate import simulate_acquisition

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--frames-per-file", type=int, default=50)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--compression", nargs="+", default=["bslz4", "gzip"])
    parser.add_argument("--engine", default="auto", choices=["auto", "csr", "pyfai"])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="xrd-bench-") as tmp:
        for compression in args.compression:
            acq = simulate_acquisition(
                Path(tmp) / compression,
                frames=args.frames,
                frames_per_file=args.frames_per_file,
                compression=compression,
            )
            settings = IntegrationSettings(acq.poni_path, bins=args.bins, mask_path=acq.mask_path)
            source = LambdaSource.from_file(acq.module_files[0][0])
            source.prepare()
            mask = IntegrationEngine(settings, source.frame_shape, source.detector_mask, engine="pyfai").mask
            bare_s, n = bare_pyfai(source, settings, mask)
            marks: list[tuple[float, int, float]] = []

            def progress(done: int, failed: int, marks=marks) -> None:
                t = os.times()
                marks.append((time.perf_counter(), done, t.user + t.system))

            report = integrate_source(
                LambdaSource.from_file(acq.module_files[0][0]),
                settings,
                Path(tmp) / f"{compression}.nxs",
                workers=args.workers,
                engine=args.engine,
                progress=progress,
            )
            assert report.ok and report.frames_integrated == n
            size = sum(p.stat().st_size for m in acq.module_files for p in m) / n / 1e6
            (t0, n0, c0), (t1, n1, c1) = marks[0], marks[-1]
            steady = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
            cpu_ms = 1e3 * (c1 - c0) / max(1, n1 - n0)
            rows.append((compression, n, size, n / bare_s, report.frames_per_second, steady, cpu_ms))
    print(
        f"{'compression':12s} {'frames':>6s} {'MB/frame':>8s} {'bare pyFAI fr/s':>16s} "
        f"{'end-to-end fr/s':>16s} {'ratio':>6s} {'steady fr/s':>11s} {'CPU ms/fr':>9s}"
    )
    for compression, n, size, bare, e2e, steady, cpu_ms in rows:
        print(f"{compression:12s} {n:6d} {size:8.2f} {bare:16.1f} {e2e:16.1f} {e2e / bare:6.2f} {steady:11.1f} "
              f"{cpu_ms:9.1f}")
    print(
        f"(2-D frames {1833}x{1556}, {args.bins} bins, bbox/csr/cython, engine {args.engine}, workers={args.workers}, "
        f"{len(np.__version__) and 'numpy ' + np.__version__})"
    )
    print(describe())


if __name__ == "__main__":
    main()
