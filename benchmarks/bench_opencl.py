"""pyFAI's OpenCL path (GPU) against its Cython path, through our IntegrationEngine, on Lambda 2M frames.

Only meaningful on a machine with an OpenCL device (pyopencl installed and an ICD present); the
pipeline itself never needs one. Prints ms/frame for ("bbox", "csr", "cython") and ("bbox", "csr",
"opencl") on the same frames, and the largest relative difference between the two results.

Run:  python benchmarks/bench_opencl.py [--frames 50] [--bins 2048]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from pipeline_core.formats.lambda_layout import MODULE_SHAPE, P02_2_OFFSETS
    from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
    from pipeline_core.processing.stitch import StitchLayout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--bins", type=int, default=2048)
    args = parser.parse_args()
    from pyFAI.opencl import ocl

    print(f"OpenCL devices seen by pyFAI: {ocl}")

    layout = StitchLayout.from_offsets(list(P02_2_OFFSETS), [MODULE_SHAPE] * 3)
    rng = np.random.default_rng(0)
    frames = [rng.poisson(20, layout.frame_shape).astype(np.int32) for _ in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        poni = Path(tmp) / "l2.poni"
        poni.write_text(
            "poni_version: 2\nDetector: Detector\n"
            'Detector_config: {"pixel1": 5.5e-05, "pixel2": 5.5e-05, "max_shape": null}\n'
            "Distance: 0.309\nPoni1: 0.0385\nPoni2: 0.1407\nRot1: 0.0072\nRot2: 0.0015\nRot3: 0.0\n"
            "Wavelength: 4.836e-11\n"
        )
        results = {}
        for impl in ("cython", "opencl"):
            settings = IntegrationSettings(poni, bins=args.bins, method=("bbox", "csr", impl))
            t0 = time.perf_counter()
            engine = IntegrationEngine(settings, layout.frame_shape, layout.gap_mask())
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = [engine.integrate(f).intensity for f in frames]
            per_frame = (time.perf_counter() - t0) / len(frames)
            results[impl] = np.array(out)
            print(
                f"{impl:7s} engine build {build:6.2f} s   {per_frame * 1e3:7.2f} ms/frame   "
                f"({1 / per_frame:6.1f} frames/s)"
            )
    ref = results["cython"]
    nz = ref != 0
    rel = np.abs(results["opencl"][nz] - ref[nz]) / np.abs(ref[nz])
    print(f"max relative difference opencl vs cython: {rel.max():.2e} (median {np.median(rel):.2e})")


if __name__ == "__main__":
    main()
