"""Peak memory of `xrd-pipeline integrate` on a simulated Lambda 2M acquisition (README's figures).

README states how much memory the offline CLI takes (one and two workers, the csr engine and
pyFAI's own) and how large the short-lived engine-build child grows. Those figures are measured
here, and ``tests/test_memory_claims.py`` runs this benchmark and checks README against it.

Each case runs ``xrd-pipeline integrate`` (``tango_servers.cli.main``, what the console script
calls) in a fresh Python process of its own, which then reports

* ``cli_mb``: the process's own peak RSS (``VmHWM``: its own address space; ``ru_maxrss`` would
  also count the pages of whoever spawned it, since the kernel carries them over an ``exec``);
* ``child_mb``: the peak RSS of its largest finished child, i.e. the engine-build child
  (``RUSAGE_CHILDREN``). This is an upper bound: the kernel counts in the CLI's own pages at the
  moment it spawned the child, which are fewer than the child's peak.

Memory is flat whatever the scan length when a longer scan gives the same peak: the case
"csr, 1 worker" is measured again on a scan ``--long`` times as long.

Run:  .venv/bin/python -m benchmarks.bench_memory [--frames 40] [--long 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

STEM = "ramp_00001"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One `integrate` run: engine, worker count, and which acquisition (short or long)."""

    engine: str
    workers: int
    long: bool = False

    @property
    def label(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        return f"{self.engine}, {workers}" + (", long" if self.long else "")


#: What README states figures for, plus the scan-length check.
CASES = (Case("csr", 1), Case("csr", 2), Case("pyfai", 2), Case("csr", 1, long=True))


@dataclass(frozen=True)
class Peak:
    """Peak RSS (MB = MiB, as README means it) of one `integrate` run and of its engine-build child."""

    case: Case
    frames: int
    cli_mb: float
    child_mb: float
    engine_used: str


def _own_peak_mb() -> float:
    """This process's peak RSS: VmHWM counts only its own address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("/proc/self/status has no VmHWM line: peak RSS cannot be measured on this system")


def _run_integrate(acq_dir: Path, engine: str, workers: int, out: Path) -> dict:
    """In the measuring child: run the CLI exactly as `xrd-pipeline integrate` would, then read the peaks."""
    from tango_servers.cli import main as xrd_pipeline

    argv = ["integrate", str(acq_dir), "--poni", str(acq_dir / f"{STEM}.poni"),
            "--mask", str(acq_dir / f"{STEM}_mask.edf"), "--engine", engine, "--workers", str(workers),
            "-o", str(out), "--no-engine-cache"]  # fmt: skip  # every case builds: the build child is measured
    rc = xrd_pipeline(argv)
    if rc != 0:
        raise RuntimeError(f"xrd-pipeline {' '.join(argv)} exited {rc}; expected 0")
    import h5py

    with h5py.File(out, "r") as h5:
        used = h5["processed/process/engine"][()].decode()
    return {"cli_mb": _own_peak_mb(), "child_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
            "engine_used": used}


def measure(acq_dir: Path, case: Case, frames: int, out: Path) -> Peak:
    """Run one case in a fresh process (so its peak is its own) and return what it reports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(acq_dir), case.engine,
            str(case.workers), str(out)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {case.label} failed (exit status {done.returncode}): {done.stderr[-2000:]}")
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    return Peak(case, frames, reported["cli_mb"], reported["child_mb"], reported["engine_used"])


def measure_all(workdir: Path, frames: int = 40, long_factor: int = 3, cases=CASES) -> list[Peak]:
    """Simulate a short and a long Lambda 2M acquisition in ``workdir`` and measure every case."""
    from pipeline_core.simulate import simulate_acquisition

    lengths = {False: frames, True: frames * long_factor}
    dirs = {}
    for long in sorted({c.long for c in cases}):
        acq = simulate_acquisition(workdir / ("long" if long else "short"), frames=lengths[long],
                                   frames_per_file=20, compression="bslz4", stem=STEM)  # fmt: skip
        dirs[long] = acq.directory
    peaks = []
    for i, case in enumerate(cases):
        peaks.append(measure(dirs[case.long], case, lengths[case.long], workdir / f"out_{i}.nxs"))
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames of the short scan")
    parser.add_argument("--long", type=int, default=3, help="the long scan is this many times as long")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        acq_dir, engine, workers, out = args.child
        print(json.dumps(_run_integrate(Path(acq_dir), engine, int(workers), Path(out))))
        return
    with tempfile.TemporaryDirectory(prefix="xrd-bench-memory-") as tmp:
        peaks = measure_all(Path(tmp), args.frames, args.long)
    print(f"\n{'case':22s} {'frames':>6s} {'engine':>6s} {'peak RSS MB':>11s} {'build child MB':>14s}")
    for p in peaks:
        print(f"{p.case.label:22s} {p.frames:6d} {p.engine_used:>6s} {p.cli_mb:11.0f} {p.child_mb:14.0f}")
    print(f"(Lambda 2M 1833x1556, bitshuffle-LZ4, 2048 bins, bbox,csr,cython; MB = MiB; {os.cpu_count()} CPUs)")
    print(json.dumps([asdict(p) for p in peaks]))


if __name__ == "__main__":
    main()
