"""Reintegration jobs: a simulated Lambda 2M acquisition through the local backend (1 and 2 workers) and
a Slurm array (2 tasks); frames/s end to end (submit → result published), the phases (start, ranges,
merge), and the Slurm path's overhead over the local one. Every result is checked equal to the first, row for row.

Run:  .venv/bin/python -m benchmarks.bench_jobs [--frames 2000] [--frames-per-file 500] [--bins 2048]

Slurm needs its commands and a cluster (``eval "$(scripts/slurm_local.sh start)"`` for a one-node
one); without ``sbatch`` the Slurm row is skipped. Not a test: timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def run_job(manager, source: str, settings, out: Path, backend: str) -> tuple[float, str, dict[str, float]]:
    """Submit and wait; (wall seconds from submit to the published result, result file, phases).

    Phases, seen every 0.5 s in the tasks' records: ``start`` (submit → first range running: the
    scheduler's latency and the runner's start), ``ranges`` (→ every range done: integration),
    ``merge`` (→ result published: the merge, and for Slurm its dependency)."""
    from pipeline_core.jobs.workdir import WorkDir

    t0 = time.perf_counter()
    (record,) = manager.submit([source], settings, out, backend=backend)
    work = WorkDir(record.work_dir)
    spec = work.spec()
    seen: dict[str, float] = {}

    def note(_record) -> None:
        now = time.perf_counter() - t0
        tasks = [work.task(r.index) for r in spec.ranges] if work.exists() else []
        if any(t is not None for t in tasks):
            seen.setdefault("first", now)
        if tasks and all(t is not None and t.state == "done" for t in tasks):
            seen.setdefault("all_done", now)

    final = manager.wait(record.job_id, timeout_s=3600, on_update=note)
    wall = time.perf_counter() - t0
    if final.state != "complete":
        raise SystemExit(f"{backend} job {final.job_id} ended {final.state}: {final.reason}")
    first = seen.get("first", 0.0)
    done = seen.get("all_done", wall)
    return wall, final.output, {"start": first, "ranges": done - first, "merge": wall - done}


def main() -> None:
    from pipeline_core.formats.nexus import read_merged
    from pipeline_core.jobs.config import JobsConfig, LocalConfig, SlurmConfig
    from pipeline_core.jobs.manager import JobManager
    from pipeline_core.jobs.slurm_commands import slurm_available
    from pipeline_core.processing.integrate import IntegrationSettings
    from pipeline_core.simulate import simulate_acquisition

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--frames-per-file", type=int, default=500)
    parser.add_argument("--bins", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="xrd-bench-jobs-") as tmp:
        root = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        acq = simulate_acquisition(root / "raw", frames=args.frames, frames_per_file=args.frames_per_file)
        print(f"simulated {acq.n_frames} frames in {len(acq.module_files[0])} files per module "
              f"in {time.perf_counter() - t0:.0f} s ({root / 'raw'})")  # fmt: skip
        settings = IntegrationSettings(acq.poni_path, bins=args.bins, mask_path=acq.mask_path)
        source = str(acq.module_files[0][0])
        runs = [("local", 1), ("local", 2)] + ([("slurm", 2)] if slurm_available() else [])
        rows, outputs = [], []
        for backend, n in runs:
            config = JobsConfig(
                state_directory=root / "state",
                local=LocalConfig(workers=n if backend == "local" else 1),
                slurm=SlurmConfig(tasks=n, cpus_per_task=1, time_limit="01:00:00"),
            )
            wall, output, phases = run_job(JobManager(config), source, settings, root / "out", backend)
            rows.append((backend, n, wall, acq.n_frames / wall, phases))
            outputs.append(output)
            print(f"  {backend} x{n}: {wall:.1f} s, {acq.n_frames / wall:.1f} frames/s -> {output}", flush=True)
        first = read_merged(outputs[0])
        for other in outputs[1:]:
            got = read_merged(other)
            assert np.array_equal(first["data"], got["data"]) and np.array_equal(
                first["frame_number"], got["frame_number"]
            ), f"{other} differs from {outputs[0]}"
        cores = os.cpu_count()
        print(f"\n{acq.n_frames} frames, {args.frames_per_file} per file, {args.bins} bins, {cores} cores, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'backend':<10}{'workers/tasks':>14}{'wall s':>9}{'frames/s':>10}{'start s':>9}{'ranges s':>10}"
              f"{'merge s':>9}")  # fmt: skip
        for backend, n, wall, fps, ph in rows:
            print(
                f"{backend:<10}{n:>14}{wall:>9.1f}{fps:>10.1f}{ph['start']:>9.1f}{ph['ranges']:>10.1f}{ph['merge']:>9.1f}"
            )
        by = {(b, n): (wall, ph) for b, n, wall, _, ph in rows}
        if ("slurm", 2) in by:
            (sw, sp), (lw, lp) = by[("slurm", 2)], by[("local", 2)]
            fixed = (sp["start"] + sp["merge"]) - (lp["start"] + lp["merge"])
            print(f"Slurm over local (2 tasks vs 2 workers): wall {sw - lw:+.1f} s ({100 * (sw - lw) / lw:+.0f} %); "
                  f"scheduling + merge dependency {fixed:+.1f} s (the rest is the integration itself, "
                  "which varies with the load)")  # fmt: skip
        else:
            print("Slurm row skipped: sbatch is not installed here")
        print("results equal row for row: yes")


if __name__ == "__main__":
    main()
