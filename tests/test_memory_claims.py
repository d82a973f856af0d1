"""README's memory figures for `xrd-pipeline integrate`, measured (issue 18).

README states the peak memory of the offline CLI on a Lambda 2M (one and two workers, the csr
engine and pyFAI's own), that it stays flat whatever the scan length, and how large the
short-lived engine-build child grows. ``benchmarks/bench_memory.py`` measures each case in a fresh
process (the CLI's own peak RSS, and its build child's); this test runs that benchmark as README
names it and checks every figure README states against what it measured. A range in README is
the bound; "about N MB" means within 5 %.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow

#: "about N MB": this far either side
ABOUT = 0.05
SHORT_FRAMES, LONG_FACTOR = 40, 3
#: README's wording for each case (engine, workers) -> its figure, a range "lo–hi"
RANGES = {
    ("csr", 1): r"a peak of (\d+)–(\d+) MB with one worker on a Lambda 2M",
    ("csr", 2): r"(\d+)–(\d+) MB with two \(the csr engine is shared",
    ("pyfai", 2): r"pyFAI's own engine takes (\d+)–(\d+) MB with two",
}
BUILD_CHILD = r"engine is built in a short-lived child process \(about (\d+) MB"


def readme_figure(pattern: str) -> tuple[float, ...]:
    """The numbers README states where ``pattern`` matches (line breaks read as spaces)."""
    text = " ".join((REPO / "README.md").read_text().split())
    found = re.search(pattern, text)
    assert found, f"README no longer says {pattern!r}: state the measured figure there, then update this test"
    return tuple(float(n) for n in found.groups())


@pytest.fixture(scope="module")
def peaks() -> dict[tuple[str, int, bool], dict]:
    """Every case of the benchmark, run once for the module: (engine, workers, long) -> its peaks."""
    readme = (REPO / "README.md").read_text()
    assert "benchmarks/bench_memory.py" in readme  # where the figures are stated
    line = next(s for s in readme.splitlines() if "benchmarks.bench_memory" in s)  # the Benchmarks section's command
    module = line.split("#")[0].split()[-1]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--frames", str(SHORT_FRAMES), "--long", str(LONG_FACTOR)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(p["case"]["engine"], p["case"]["workers"], p["case"]["long"]): p for p in measured}


@pytest.mark.parametrize("case", list(RANGES), ids=lambda c: f"{c[0]}-{c[1]}-workers")
def test_the_peak_memory_readme_states_is_what_integrate_takes(peaks, case):
    low, high = readme_figure(RANGES[case])
    peak = peaks[(*case, False)]
    assert peak["engine_used"] == case[0]
    assert low <= peak["cli_mb"] <= high, (
        f"xrd-pipeline integrate --engine {case[0]} --workers {case[1]} on {peak['frames']} Lambda 2M frames "
        f"peaked at {peak['cli_mb']:.0f} MB; README says {low:.0f}–{high:.0f} MB"
    )


def test_memory_stays_flat_whatever_the_scan_length(peaks):
    short, long = peaks[("csr", 1, False)], peaks[("csr", 1, True)]
    assert long["frames"] == LONG_FACTOR * short["frames"] == LONG_FACTOR * SHORT_FRAMES
    assert long["cli_mb"] <= (1 + ABOUT) * short["cli_mb"], (
        f"{long['frames']} frames peaked at {long['cli_mb']:.0f} MB, {short['frames']} at {short['cli_mb']:.0f} MB"
    )


def test_the_engine_build_child_takes_what_readme_says_and_the_cli_never_holds_it(peaks):
    (about,) = readme_figure(BUILD_CHILD)
    for (engine, workers, _), peak in peaks.items():
        child = peak["child_mb"]
        assert (1 - ABOUT) * about <= child <= (1 + ABOUT) * about, (
            f"the engine-build child of --engine {engine} --workers {workers} peaked at {child:.0f} MB; "
            f"README says about {about:.0f} MB"
        )
        if engine == "csr":  # the long-running process stays well below the build's peak
            assert peak["cli_mb"] < child, (engine, workers, peak)
