"""Integration engines end to end: the csr engine, pyFAI's engine and bare pyFAI, in one run (issue 11).

For each compression (bitshuffle-LZ4, DEFLATE) one simulated Lambda 2M acquisition is written, then
each measurement runs in its own process (so its peak RSS is its own):

* bare pyFAI: ``AzimuthalIntegrator.integrate1d`` on the stitched frames already in memory (same
  method, mask, corrections; pyFAI's own OpenMP threads on every core);
* a user's h5py + pyFAI script (``h5py+pyFAI`` rows, per compression): h5py reads each module
  frame, the frame is stitched, ``integrate1d`` integrates it, one HDF5 file at the end; its whole
  rate is what the e2e rows' whole rates are compared with on the ``whole process`` lines;
* end to end, per engine (``csr``, ``pyfai``) and worker count (1, 2): read + decode + integrate +
  write the merged file through ``integrate_source``. DEFLATE data is measured twice when the
  optional libdeflate bindings (PyPI ``deflate``) are installed: inflated by them, and by zlib.

Two rates are shown: *steady* (frames after the first batch over the time after it: what a long
scan sees) and *whole* (engine build included; short runs are dominated by it). Every end-to-end run
builds its engine (no engine cache) except the rows marked ``cached``, which load it from an engine
cache a previous run filled (issue 21: what every later ``integrate`` of the same geometry sees).
The csr rows also show the block-size probe (CPU ms a frame per block size, and the one chosen), and
the first line describes the machine (cores, memory bandwidth measured now, load average). Ratios are steady
end-to-end over steady bare pyFAI; a second ratio compares CPU time per frame (every thread of the
process), which other jobs on a shared machine disturb less than wall-clock rates. Peak RSS is the
measuring process's; the engine-build child's peak (~0.5 GB for ~2 s, then it exits) is shown
apart. Targets on 2 cores (issue 21): steady >= 6x bare pyFAI for bitshuffle-LZ4, >= 3x for DEFLATE;
whole process >= 4x bare pyFAI and >= 5x the h5py + pyFAI script. Numbers move
+-20 % on a shared machine: compare within a run.

Run:  .venv/bin/python -m benchmarks.bench_engine [--frames 100] [--workers 1 2] [--compression bslz4 gzip]
      [--engines csr pyfai] [--no-cached] [--no-script]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: its own address space's, unlike ru_maxrss, which after fork+exec
    still counts the parent's pages at the fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process, every thread (pyFAI's OpenMP ones too)."""
    t = os.times()
    return t.user + t.system


def _children_peak_mb() -> float:
    """Peak RSS of the largest finished child (the engine-build child: forked while we were small)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _settings(acq_dir: Path, stem: str, bins: int):
    from pipeline_core.processing.integrate import IntegrationSettings

    return IntegrationSettings(acq_dir / f"{stem}.poni", bins=bins, mask_path=acq_dir / f"{stem}_mask.edf")


def measure_bare(acq_dir: Path, stem: str, bins: int) -> dict:
    """pyFAI integrate1d on frames in memory (child process)."""
    import pyFAI

    from pipeline_core.formats.mask import load_mask_file
    from pipeline_core.processing.sources import LambdaSource

    settings = _settings(acq_dir, stem, bins)
    source = LambdaSource.from_file(acq_dir / f"{stem}_m1_part00000.nxs")
    source.prepare()
    mask = source.detector_mask | load_mask_file(settings.mask_path)  # what the engines integrate with
    frames = [f for chunk in source.chunks(16, print) for f in chunk.frames]
    ai = pyFAI.load(str(settings.poni_path))
    kwargs = dict(unit=settings.unit, method=settings.method, mask=mask,
                  polarization_factor=settings.polarization_factor, correctSolidAngle=settings.correct_solid_angle)
    t0 = time.perf_counter()
    ai.integrate1d(frames[0], bins, **kwargs)  # builds pyFAI's engine
    t1, c1 = time.perf_counter(), _cpu_s()
    for frame in frames[1:]:
        ai.integrate1d(frame, bins, **kwargs)
    t2, c2 = time.perf_counter(), _cpu_s()
    return {"frames": len(frames), "whole": len(frames) / (t2 - t0), "steady": (len(frames) - 1) / (t2 - t1),
            "cpu_ms": 1e3 * (c2 - c1) / (len(frames) - 1), "rss_mb": _peak_rss_mb(), "child_rss_mb": 0.0}


def measure_script(acq_dir: Path, stem: str, bins: int, out: Path) -> dict:
    """What a user writes without this pipeline (child process): h5py (with
    hdf5plugin) reads each frame of the three module files, stitches them (Dioptas' placement),
    pyFAI's ``integrate1d`` integrates the frame (same method, mask, corrections), and the patterns
    go into one HDF5 file at the end. pyFAI's engine build and the write count (imports do not,
    as for ``integrate_source``'s whole rate)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
    import numpy as np
    import pyFAI

    from pipeline_core.formats import lambda_layout as L
    from pipeline_core.formats.mask import load_mask_file
    from pipeline_core.processing.sources import LambdaSource

    t0 = time.perf_counter()  # after the imports, as integrate_source's rate is
    settings = _settings(acq_dir, stem, bins)
    source = LambdaSource.from_file(acq_dir / f"{stem}_m1_part00000.nxs")
    source.prepare()  # the mask only: what the engines integrate with (gaps, pixel_mask, user mask)
    mask = source.detector_mask | load_mask_file(settings.mask_path)
    ai = pyFAI.load(str(settings.poni_path))
    kwargs = dict(unit=settings.unit, method=settings.method, mask=mask,
                  polarization_factor=settings.polarization_factor, correctSolidAngle=settings.correct_solid_angle)
    patterns = []
    layout = source.layout  # Dioptas' placement (rounded translations, flips), as a user's script copies it
    assert layout is not None
    for part in sorted(acq_dir.glob(f"{stem}_m1_part*.nxs")):
        files = [h5py.File(str(part).replace("_m1_", f"_m{m}_"), "r") for m in (1, 2, 3)]
        for i in range(files[0][L.DATA].shape[0]):
            frame = layout.stitch([f[L.DATA][i] for f in files])
            patterns.append(ai.integrate1d(frame, bins, **kwargs).intensity)
        for f in files:
            f.close()
    with h5py.File(out, "w") as h5:
        h5["patterns"] = np.asarray(patterns, np.float32)
    wall = time.perf_counter() - t0
    return {"frames": len(patterns), "whole": len(patterns) / wall, "steady": float("nan"), "cpu_ms": float("nan"),
            "rss_mb": _peak_rss_mb(), "child_rss_mb": 0.0}


def measure_e2e(acq_dir: Path, stem: str, bins: int, engine: str, workers: int, out: Path, inflater: str) -> dict:
    """integrate_source end to end (child process); steady rate from the progress callbacks."""
    import logging

    from pipeline_core.formats import lambda_part

    probes: list[str] = []

    class _Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            probes.append(record.getMessage().removeprefix("block size probe: "))

    probe_log = logging.getLogger("pipeline_core.processing.block_size")
    probe_log.setLevel(logging.INFO)
    probe_log.addHandler(_Probe())
    from pipeline_core.processing.offline import integrate_source

    if inflater == "zlib":  # measure without the optional libdeflate bindings
        lambda_part._libdeflate = None
    from pipeline_core.processing.sources import LambdaSource

    marks: list[tuple[float, int, float]] = []
    report = integrate_source(
        LambdaSource.from_file(acq_dir / f"{stem}_m1_part00000.nxs"), _settings(acq_dir, stem, bins), out,
        workers=workers, progress=lambda done, failed: marks.append((time.perf_counter(), done, _cpu_s())),
        engine=engine,
    )  # fmt: skip
    assert report.ok, report.failures
    import h5py

    with h5py.File(report.output, "r") as h5:
        used = h5["processed/process/engine"][()].decode()
    (t_first, n_first, c_first), (t_last, n_last, c_last) = marks[0], marks[-1]
    return {"frames": report.frames_integrated, "whole": report.frames_per_second,
            "steady": (n_last - n_first) / (t_last - t_first) if t_last > t_first else float("nan"),
            "cpu_ms": 1e3 * (c_last - c_first) / max(1, n_last - n_first),
            "rss_mb": _peak_rss_mb(), "child_rss_mb": _children_peak_mb(),
            "engine_used": used, "probe": probes[-1] if probes else ""}


def _in_child(*args: str, cache: str = "off") -> dict:
    env = dict(os.environ)
    env["XRD_PIPELINE_ENGINE_CACHE"] = cache
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_engine", "--child", *args], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {args} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--frames-per-file", type=int, default=50)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=["csr", "pyfai"])
    parser.add_argument("--compression", nargs="+", default=["bslz4", "gzip"])
    parser.add_argument("--no-cached", action="store_true", help="no row with the engine loaded from a cache")
    parser.add_argument("--no-script", action="store_true", help="no row for a user's h5py + pyFAI script")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, acq_dir, stem, bins, *rest = args.child
        if kind == "bare":
            result = measure_bare(Path(acq_dir), stem, int(bins))
        elif kind == "script":
            result = measure_script(Path(acq_dir), stem, int(bins), Path(rest[0]))
        else:
            engine, workers, out, inflater = rest
            result = measure_e2e(Path(acq_dir), stem, int(bins), engine, int(workers), Path(out), inflater)
        print(json.dumps(result))
        return

    from benchmarks.machine import describe
    from pipeline_core.formats import lambda_part
    from pipeline_core.simulate import simulate_acquisition

    print(describe(), flush=True)

    # DEFLATE is inflated by libdeflate when its bindings (PyPI ``deflate``) are installed, else by zlib
    inflaters = ["libdeflate", "zlib"] if lambda_part._libdeflate is not None else ["zlib"]
    stem = "ramp_00001"
    rows = []
    with tempfile.TemporaryDirectory(prefix="xrd-bench-engine-") as tmp:
        bare = None
        for compression in args.compression:
            acq = simulate_acquisition(Path(tmp) / compression, frames=args.frames,
                                       frames_per_file=args.frames_per_file, compression=compression, stem=stem)
            d = str(acq.directory)
            if bare is None:  # the same frames whatever the compression: bare pyFAI reads them once
                bare = _in_child("bare", d, stem, str(args.bins))
                rows.append(("memory", "bare pyFAI", "-", bare))
            if not args.no_script:
                script = _in_child("script", d, stem, str(args.bins), str(Path(tmp) / f"script-{compression}.h5"))
                rows.append((compression, "h5py+pyFAI", "-", script))
            for inflater in inflaters if compression == "gzip" else inflaters[:1]:
                data = compression if compression != "gzip" else f"gzip/{inflater}"
                for workers in args.workers:
                    for engine in args.engines:
                        out = Path(tmp) / f"{compression}-{inflater}-{engine}-{workers}.nxs"
                        result = _in_child("e2e", d, stem, str(args.bins), engine, str(workers), str(out), inflater)
                        rows.append((data, f"e2e {result['engine_used']}", str(workers), result))
                if "csr" in args.engines and not args.no_cached:  # the engine from a cache a first run filled
                    cache = str(Path(tmp) / "engines")
                    for run in ("fill", "cached"):
                        out = Path(tmp) / f"{compression}-{inflater}-{run}.nxs"
                        most = str(max(args.workers))
                        result = _in_child("e2e", d, stem, str(args.bins), "csr", most, str(out), inflater,
                                           cache=cache)  # fmt: skip
                    rows.append((data, "e2e csr cached", most, result))
    assert bare is not None
    print(f"\n{'data':15s} {'what':14s} {'workers':>7s} {'steady fr/s':>11s} {'x bare':>7s} {'whole fr/s':>10s} "
          f"{'CPU ms/fr':>9s} {'x bare':>7s} {'peak RSS MB':>11s} {'build child MB':>14s}")
    for data, what, workers, r in rows:
        print(f"{data:15s} {what:14s} {workers:>7s} {r['steady']:11.1f} {r['steady'] / bare['steady']:7.2f} "
              f"{r['whole']:10.1f} {r['cpu_ms']:9.1f} {bare['cpu_ms'] / r['cpu_ms']:7.2f} {r['rss_mb']:11.0f} "
              f"{r['child_rss_mb']:14.0f}")
    print("x bare: steady frames/s over bare pyFAI's; for CPU, bare pyFAI's CPU time a frame over this one's "
          "(less sensitive to other load on a shared machine)")
    scripts = {data: r for data, what, _, r in rows if what == "h5py+pyFAI"}
    for data, what, workers, r in rows:
        base = scripts.get(data.split("/")[0])
        if what.startswith("e2e") and base is not None:
            print(f"whole process, {data} {what} {workers} worker(s): {r['whole'] / base['whole']:.2f}x the h5py + "
                  f"pyFAI script ({base['whole']:.1f} fr/s), {r['whole'] / bare['whole']:.2f}x bare pyFAI "
                  f"whole ({bare['whole']:.1f} fr/s)")
    for data, what, workers, r in rows:
        if r.get("probe"):
            print(f"block probe, {data} {what} {workers} worker(s): {r['probe']}")
    print(describe())
    print(f"(Lambda 2M 1833x1556, {args.frames} frames, {args.bins} bins, bbox,csr,cython, polarization 0.99, "
          f"solid angle, user mask + gaps + pixel_mask; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
