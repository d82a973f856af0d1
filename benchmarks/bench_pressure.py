"""Frames per second of the pressure fit step (``PressureTracker.feed``) on one core.

Synthetic gold ramp patterns (2048 bins of 2θ, five reflections, a sample line on 200 part of the
way, Poisson-like noise), fed in batches as the offline run does (``--batch``) and as the live
Merger would (small batches). The goal: ≥ 2,000 frames/s per core, so the fit never slows the chain.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_pressure.py [--frames 4000] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # per core: before numpy loads its BLAS

import numpy as np  # noqa: E402

from pipeline_core.science import PressureSettings, PressureTracker, load_marker  # noqa: E402
from pipeline_core.science import radial as R  # noqa: E402

WAVELENGTH_A = 0.4836


def ramp_patterns(frames: int, bins: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axis, rows, true pressure) of a 0 → 100 GPa gold ramp."""
    marker = load_marker("au")
    axis = np.linspace(2.0, 30.0, bins)
    pressure = np.linspace(0.0, 100.0, frames)
    grid = np.linspace(0.0, 100.0, 201)
    ratio = np.interp(pressure, grid, [marker.ratio_at(p) for p in grid])
    rows = np.full((frames, bins), 20.0)
    for k, d0 in enumerate(marker.d0):
        pos = R.from_d(ratio[:, None] * d0, "2th_deg", WAVELENGTH_A)
        rows += 200.0 / (k + 1) * np.exp(-0.5 * ((axis - pos) / 0.05) ** 2)
    overlap = slice(frames // 3, 2 * frames // 3)
    pos200 = R.from_d(ratio[overlap, None] * marker.d0[1], "2th_deg", WAVELENGTH_A)
    rows[overlap] += 80.0 * np.exp(-0.5 * ((axis - pos200 - 0.05) / 0.06) ** 2)
    rows = np.random.default_rng(seed).poisson(rows * 10.0) / 10.0
    return axis, rows.astype(np.float32), pressure


def run(frames: int, batch: int) -> dict:
    axis, rows, truth = ramp_patterns(frames)
    tracker = PressureTracker(PressureSettings("au"), axis, "2th_deg", WAVELENGTH_A)
    tracker.feed(np.arange(batch), rows[:batch])  # warm-up (peritheos, numpy)
    tracker = PressureTracker(PressureSettings("au"), axis, "2th_deg", WAVELENGTH_A)
    t0 = time.process_time()
    for start in range(0, frames, batch):
        tracker.feed(np.arange(start, min(frames, start + batch)), rows[start : start + batch])
    cpu = time.process_time() - t0
    series = tracker.series
    error = np.abs(series.pressure - truth)
    return {
        "frames": frames,
        "batch": batch,
        "cpu_s": round(cpu, 3),
        "frames_per_s_per_core": round(frames / cpu, 1),
        "frames_with_pressure": int(np.isfinite(series.pressure).sum()),
        "max_error_gpa": round(float(np.nanmax(error)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 16, 256])
    args = parser.parse_args()
    for batch in args.batch:
        print(json.dumps(run(args.frames, batch)))


if __name__ == "__main__":
    main()
