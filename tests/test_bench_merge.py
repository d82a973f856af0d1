"""README's Merger benchmark runs as written (small): its table has every row and the row log's cost.
Not a timed test: only that the command works and measures the same frames on each path."""

from __future__ import annotations

import re
import subprocess
import sys

from .helpers import REPO


def test_the_merge_benchmark_runs_and_reports_each_path():
    line = next(s for s in (REPO / "README.md").read_text().splitlines() if "benchmarks.bench_merge" in s)
    module = line.split("#")[0].split()[-1]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--frames", "96", "--bins", "64", "--sigma"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "96 frames x 64 bins, 16 per batch, sigma True" in out, out
    for path in ("HDF5 only", "row log + HDF5", "resume (rebuild from the log)"):
        assert re.search(rf"^\| {re.escape(path)} \| \d+\.\d\d \| [\d,]+ \| [\d,]+ \|$", out, re.M), (path, out)
    assert re.search(r"row log overhead: [+-]\d+ %; log on disk while open: \d+ MB", out), out
