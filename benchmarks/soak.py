"""Soak: a 31,000-frame acquisition through the live stages, checking memory stays flat and nothing is lost.

Small frames (the 3-module test detector, 67 x 32 pixels stitched) keep it to minutes on 2 cores; the
stages, queues, messages and merged file are the ones the Tango devices run. Every 2,000-frame part is
written as the detector would, announced, stitched, integrated by two integrators and merged. Prints
frames/s, peak and final RSS (sampled every 0.5 s) and frames lost (must be 0).

Run from the repository root (it reuses the tests' small detector, ``tests.helpers``):
  .venv/bin/python -m benchmarks.soak [--frames 31000] [--frames-per-file 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def main() -> None:
    from pipeline_core.formats.nexus import read_merged
    from pipeline_core.live.integrate_stage import IntegrateStage
    from pipeline_core.live.merge_stage import MergeStage
    from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
    from pipeline_core.live.work_source import InProcessWorkSource
    from pipeline_core.messages import PatternBatch
    from pipeline_core.processing.integrate import IntegrationSettings
    from tests.helpers import SMALL_PONI, write_small_acquisition

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=31_000)
    parser.add_argument("--frames-per-file", type=int, default=1000)
    args = parser.parse_args()
    n_parts = -(-args.frames // args.frames_per_file)
    frames = n_parts * args.frames_per_file

    process = psutil.Process()
    rss: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss.append(process.memory_info().rss)
            time.sleep(0.5)

    with tempfile.TemporaryDirectory(prefix="xrd-soak-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "small.poni").write_text(SMALL_PONI)
        settings = IntegrationSettings(tmp / "small.poni", bins=100)
        print(f"writing {frames} frames in {n_parts} parts ...", file=sys.stderr)
        acq = write_small_acquisition(
            tmp / "raw", n_parts=n_parts, frames_per_part=args.frames_per_file, record_total=True
        )
        closed, errors = [], []
        merge = MergeStage(tmp / "out", closed.append, errors.append, scan_timeout_s=60)
        stitch = StitchStage(
            StitchConfig(frames_per_item=64),
            on_scan=merge.scan_started,
            on_work=lambda n: [s.wake() for s in integrators],
            on_error=errors.append,
        )

        def send(batch: PatternBatch) -> None:
            fmt, payload = batch.encode()  # the wire format, as between the devices
            merge.add_batch(PatternBatch.decode(fmt, payload))

        integrators = []
        for i in range(2):
            stage = IntegrateStage(
                f"int{i}", settings, InProcessWorkSource(stitch), send, errors.append, poll_interval_s=0.2
            )
            stage.start()
            integrators.append(stage)
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        for f in acq["files"]:
            stitch.announce(str(f))
        while not closed:
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        done.set()
        for s in integrators:
            s.stop()
        stitch.stop()
        merge.stop()
        m = read_merged(closed[0].path)
        merged = m["frame_number"]
        lost = frames - len(set(merged.tolist()))
        duplicates = len(merged) - len(set(merged.tolist()))

    mib = 1 << 20
    first_quarter = max(rss[: max(1, len(rss) // 4)])
    print(
        f"frames {frames} ({n_parts} parts x {args.frames_per_file}), 2 integrators, {elapsed:.1f} s, "
        f"{frames / elapsed:.0f} frames/s"
    )
    print(
        f"RSS: peak {max(rss) / mib:.0f} MiB, peak in the first quarter {first_quarter / mib:.0f} MiB, "
        f"at the end {rss[-1] / mib:.0f} MiB ({len(rss)} samples)"
    )
    print(f"frames lost {lost}, duplicates {duplicates}, failed {len(m['failed_frames'])}, errors {len(errors)}")
    if lost or duplicates or errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
