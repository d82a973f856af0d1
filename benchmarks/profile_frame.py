"""Where one frame's CPU time goes on the csr path (issue 21): each stage timed on its own over a
simulated Lambda 2M acquisition (bitshuffle-LZ4 by default), thread CPU ms per frame.

Stages: the raw chunk read (``read_direct_chunk``, 3 modules), the chunk check alone
(:func:`~pipeline_core.formats.chunk_check.check_bitshuffle_lz4`: every LZ4 block decompressed once),
HDF5's own read + decode of those chunks (what followed the check before issue 21's second round),
``OpenPart.read_modules`` as the source calls it (today: checked and decoded in one pass), and the
csr product (blocks of k frames, float32 conversion included). No stitch stage: the csr engine reads
module frames (the stitch is folded into its columns). Then ``integrate_source`` end to end, 1 and
2 workers, with the CPU time of each of its threads (reader: read + check + decode; integrators:
the product; main: the merged-file writes), between the first and the 90 % progress mark.

Run:  .venv/bin/python -m benchmarks.profile_frame [--frames 100] [--compression bslz4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _ms(fn, n: int, repeat: int = 3) -> float:
    """The least thread CPU ms per frame of ``repeat`` runs (the first pays page faults, others' load)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return 1e3 * best / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--compression", default="bslz4")
    parser.add_argument("--bins", type=int, default=2048)
    args = parser.parse_args()
    from benchmarks.machine import describe
    from pipeline_core.formats.lambda_part import open_part
    from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
    from pipeline_core.processing.module_frames import ModuleFrames
    from pipeline_core.processing.sources import LambdaSource
    from pipeline_core.simulate import simulate_acquisition

    print(describe(), flush=True)
    with tempfile.TemporaryDirectory(prefix="xrd-profile-") as tmp:
        n = args.frames
        acq = simulate_acquisition(Path(tmp), frames=n, frames_per_file=n, compression=args.compression)
        source = LambdaSource.from_file(next(Path(tmp).glob("*_m1_part00000.nxs")))
        source.prepare()
        settings = IntegrationSettings(acq.poni_path, bins=args.bins, mask_path=acq.mask_path)
        engine = IntegrationEngine(settings, source.frame_shape, source.detector_mask, engine="csr")
        part = open_part([files[0] for files in acq.module_files])
        rows = {}
        buf = np.empty((n, part.layout.module_pixels), part.module_dtype)

        def raw():
            for m in part.modules:
                out = np.empty(4 << 20, np.uint8)
                for i in range(n):
                    m.data.id.read_direct_chunk((i, 0, 0), out=out)

        def check():
            for m in part.modules:
                m.checker._checked.clear()
                m.checker.check(0, n)

        def hdf5_decode():
            for m, view in zip(part.modules, part.layout.module_views(buf), strict=True):
                for i in range(n):
                    m.data.read_direct(view[i : i + 1], np.s_[i : i + 1], np.s_[0:1])

        def read_modules():
            for m in part.modules:
                m.checker._checked.clear()
            part.read_modules(0, n, buf)

        rows["raw chunk read (3 modules)"] = _ms(raw, n)
        rows["chunk check alone (3 modules)"] = _ms(check, n)
        rows["HDF5 read+decode after a check (3 modules)"] = _ms(hdf5_decode, n)
        rows["read_modules as the source calls it"] = _ms(read_modules, n)
        modules = ModuleFrames(buf, part.layout)
        csr = engine._sparse
        block = None

        def product():
            nonlocal block
            block = engine.integrate_block(None, modules)

        product()  # probe settles k
        rows["csr product (block, incl. float32 fill)"] = _ms(product, n)
        print(f"\n{args.compression}, {n} frames, thread CPU ms per frame:")
        for name, ms in rows.items():
            print(f"  {name:42s} {ms:7.2f}")
        print(f"  (block probe, CPU ms a frame per k: {csr.block.timings}; chosen {csr.block.chosen})")
        part.close()
        for workers in (1, 2):
            _threads(acq, settings, Path(tmp) / f"out-{workers}.nxs", workers)


def _threads(acq, settings, out: Path, workers: int) -> None:
    """``integrate_source`` with each thread's CPU ms per frame (Linux /proc), steady part of the run."""
    import os
    import threading

    from pipeline_core.processing.offline import integrate_source
    from pipeline_core.processing.sources import LambdaSource

    tick = os.sysconf("SC_CLK_TCK")
    marks: list[tuple[int, dict[str, float]]] = []

    def cpu_by_thread() -> dict[str, float]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        found = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[names.get(int(tid), f"thread {tid}")] = (int(fields[11]) + int(fields[12])) / tick
        return found

    def progress(done: int, _failed: int) -> None:
        if not marks or done <= 0.9 * acq.n_frames:  # the threads end before the last mark
            marks[1:] = [(done, cpu_by_thread())]
            if len(marks) == 1:
                marks.append(marks[0])

    t0, c0 = time.perf_counter(), os.times()
    integrate_source(LambdaSource.from_file(acq.module_files[0][0]), settings, out, workers=workers,
                     engine="csr", progress=progress)  # fmt: skip
    wall, c1 = time.perf_counter() - t0, os.times()
    (n0, first), (n1, last) = marks[0], marks[-1]
    whole = 1e3 * (c1.user + c1.system - c0.user - c0.system) / acq.n_frames
    print(
        f"\nintegrate_source, {workers} worker(s): {acq.n_frames / wall:.1f} fr/s whole, {whole:.2f} CPU ms/frame "
        f"whole (engine load included); per thread, frames {n0}..{n1}:"
    )
    for name in sorted(last, key=lambda k: first.get(k, 0) - last[k]):
        ms = 1e3 * (last[name] - first.get(name, 0)) / max(1, n1 - n0)
        if ms >= 0.05:
            print(f"  {name:42s} {ms:7.2f}")


if __name__ == "__main__":
    main()
