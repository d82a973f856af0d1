"""The Merger's file path: what the row log costs, and how long a resume takes.

In one run, on the same batches (patterns of ``--bins`` bins, ``--batch`` frames each, in order):

* **HDF5 only**: :class:`MergedFileWriter` adding the rows (what merging cost before the row log);
* **row log + HDF5**: :class:`OpenScan` as the Merger runs it, every change first appended to the
  row log (``<file>.nxs.rowlog``), then written to the file;
* **resume**: a scan left open (as after ``kill -9``) rebuilt from its row log by ``OpenScan.resume``.

Frames/s and MB/s of patterns, the overhead of the log over HDF5 only, and the log's size on disk
while the scan is open. Not a test: timings depend on the machine's load and its disk.

Run:  .venv/bin/python -m benchmarks.bench_merge [--frames 20000] [--bins 2048] [--batch 16] [--sigma]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline_core.formats.nexus import MergedFileWriter
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_log import log_path
from pipeline_core.live.merge_scan import OpenScan
from pipeline_core.messages import PatternBatch
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.simulate import write_calibration


def batches(settings: IntegrationSettings, frames: int, bins: int, per_batch: int, sigma: bool) -> list[PatternBatch]:
    rng = np.random.default_rng(0)
    out = []
    for start in range(1, frames + 1, per_batch):
        numbers = np.arange(start, min(start + per_batch, frames + 1))
        n = len(numbers)
        data = rng.random((n, bins), dtype=np.float32) * 1000
        out.append(
            PatternBatch(
                f"scan:0:{start}", "scan", "lambda", "int0", 0, "fp", numbers, numbers - 1, data,
                np.linspace(1, 30, bins), sigma=np.sqrt(data) if sigma else None, settings=settings.to_dict(),
                raw_file="/raw/scan_m1_part00000.nxs", total_frames=frames,
            )
        )  # fmt: skip
    return out


def hdf5_only(directory: Path, settings: IntegrationSettings, work: list[PatternBatch]) -> float:
    t0 = time.perf_counter()
    writer = MergedFileWriter(reserve_output(directory / "plain.nxs"), work[0].radial, settings, [], [], "plain")
    for b in work:
        writer.set_raw_file(b.part, b.raw_file, b.module_files)
        writer.add(b.frame_numbers, b.intensities, b.sigma, np.full(len(b.frame_numbers), b.part), b.index_in_file)
    writer.close()
    return time.perf_counter() - t0


def with_row_log(directory: Path, work: list[PatternBatch], leave_open: bool) -> tuple[float, OpenScan]:
    t0 = time.perf_counter()
    scan = OpenScan.create(directory, work[0], None)
    for b in work:
        scan.add(b)
    if not leave_open:
        scan.close()
    return time.perf_counter() - t0, scan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16, help="frames per batch (an Integrator's work item)")
    parser.add_argument("--sigma", action="store_true", help="with an error model (sigma rows too)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        tmp_path = Path(tmp)
        poni, _ = write_calibration(tmp_path / "cal")
        settings = IntegrationSettings(poni, bins=args.bins, error_model="poisson" if args.sigma else None)
        work = batches(settings, args.frames, args.bins, args.batch, args.sigma)
        mb = args.frames * args.bins * 4 * (2 if args.sigma else 1) / 1e6
        plain = hdf5_only(tmp_path / "a", settings, work)
        logged, _ = with_row_log(tmp_path / "b", work, leave_open=False)
        left_open, scan = with_row_log(tmp_path / "c", work, leave_open=True)
        log_mb = log_path(scan.path).stat().st_size / 1e6
        scan.writer.h5.close()  # as a kill leaves it: the part, its journal and its row log
        scan.rowlog.close()  # type: ignore[union-attr]
        t0 = time.perf_counter()
        resumed = OpenScan.resume(journal_path(scan.path))
        resume_s = time.perf_counter() - t0
        assert resumed.writer.n_frames == args.frames
        resumed.close()

        shape = f"{args.frames} frames x {args.bins} bins, {args.batch} per batch, sigma {args.sigma}"
        print(f"{shape}: {mb:.0f} MB of rows")
        print("| path | s | frames/s | MB/s |")
        print("| --- | --- | --- | --- |")
        for name, s in (("HDF5 only", plain), ("row log + HDF5", logged), ("resume (rebuild from the log)", resume_s)):
            print(f"| {name} | {s:.2f} | {args.frames / s:,.0f} | {mb / s:,.0f} |")
        print(f"row log overhead: {100 * (logged / plain - 1):+.0f} %; log on disk while open: {log_mb:.0f} MB")


if __name__ == "__main__":
    main()
