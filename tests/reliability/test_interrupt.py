"""Real signals to a real ``xrd-pipeline integrate``: an interrupted run is never a result.

SIGINT/SIGTERM/SIGHUP: exit 128+signal within seconds, the file stays ``<name>.part`` with status
``interrupted`` and rows equal to an uninterrupted run's; no final name. SIGKILL: ``.part`` left
``running``, recognised as not a result by read_merged and the heatmap, and the next run takes a
fresh name.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.formats.nexus import read_merged
from pipeline_core.heatmap import render_heatmap
from pipeline_core.simulate import simulate_acquisition

from ..helpers import wait_for

CLI = Path(sys.executable).with_name("xrd-pipeline")
FRAMES = 160
STEM = "ramp_00001"


def _start(acq, out: Path) -> subprocess.Popen:
    cmd = [str(CLI), "integrate", str(acq.directory), "--poni", str(acq.poni_path), "--mask", str(acq.mask_path)]
    cmd += ["--bins", "500", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _frames_in(part: Path) -> int:
    """Rows already written in a file another process is writing (no lock; retried when torn)."""
    try:
        with h5py.File(part, "r", locking=False) as h5:
            return int(h5["processed/result/frame_number"].shape[0])
    except (OSError, KeyError):
        return 0


def _wait_until_flowing(proc: subprocess.Popen, part: Path, at_least: int = 8) -> None:
    wait_for(
        lambda: proc.poll() is None and part.exists() and _frames_in(part) >= at_least,
        timeout_s=120,
        what=f"{at_least} frames in {part}",
    )
    assert proc.poll() is None, f"integrate ended before the signal: {proc.communicate()}"


def _no_process_left(out: Path) -> None:
    for p in psutil.process_iter(["cmdline"]):
        assert str(out) not in " ".join(p.info["cmdline"] or []), f"process {p.pid} still runs: {p.info['cmdline']}"


@pytest.fixture(scope="module")
def acq(tmp_path_factory):
    return simulate_acquisition(tmp_path_factory.mktemp("raw"), frames=FRAMES, frames_per_file=40)


@pytest.fixture(scope="module")
def killed_then_rerun(acq, tmp_path_factory, ledger):
    """kill -9 mid-run, then a full run into the same folder: the reference rows for every test."""
    out = tmp_path_factory.mktemp("killed")
    proc = _start(acq, out)
    part = out / f"{STEM}.nxs.part"
    _wait_until_flowing(proc, part)
    proc.send_signal(signal.SIGKILL)
    ledger.fault("SIGKILL to integrate")
    proc.communicate(timeout=30)
    killed = {"rc": proc.returncode, "files": sorted(p.name for p in out.iterdir())}
    rerun = _start(acq, out)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    return out, killed, Path(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_leaves_an_interrupted_part_file_with_exact_rows(
    acq, killed_then_rerun, tmp_path, signum, ledger
):
    _, _, reference = killed_then_rerun
    ref = read_merged(reference)
    proc = _start(acq, tmp_path)
    part = tmp_path / f"{STEM}.nxs.part"
    _wait_until_flowing(proc, part)
    t0 = time.monotonic()
    proc.send_signal(signum)
    ledger.fault(f"{signum.name} to integrate")
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - t0

    assert proc.returncode == 128 + signum, stderr
    assert took < 15, f"took {took:.1f} s to stop after {signum.name}"
    assert not (tmp_path / f"{STEM}.nxs").exists()  # never published
    m = read_merged(part)
    assert m["status"] == "interrupted" and not m["finished"]
    numbers = m["frame_number"]
    assert 8 <= numbers.size < FRAMES
    assert np.all(np.diff(numbers) > 0) and numbers[0] >= 1
    rows = {int(n): i for i, n in enumerate(ref["frame_number"])}
    np.testing.assert_allclose(m["data"], ref["data"][[rows[int(n)] for n in numbers]], rtol=1e-6)
    ledger.checked(numbers.size)
    assert f"interrupted after {numbers.size} of {FRAMES} frames; partial result {part}" in stderr
    assert "(status interrupted)" in stderr
    assert not psutil.pid_exists(proc.pid)
    _no_process_left(tmp_path)


def test_kill_9_leaves_a_running_part_that_no_tool_takes_for_a_result(killed_then_rerun, tmp_path):
    out, killed, rerun_output = killed_then_rerun
    assert killed["rc"] == -signal.SIGKILL
    assert killed["files"] == [f"{STEM}.nxs.part"]  # no final name, no placeholder
    part = out / f"{STEM}.nxs.part"
    m = read_merged(part)
    assert m["status"] == "running" and not m["finished"]
    with pytest.raises(ConfigError, match="status 'running'"):
        render_heatmap(part, tmp_path / "killed.png")
    assert not (tmp_path / "killed.png").exists() and not (tmp_path / "killed.png.part").exists()
    labelled = render_heatmap(part, tmp_path / "killed.png", allow_partial=True)
    assert labelled.name == "killed.png" and labelled.stat().st_size > 0
    # the next run did not take the name the killed one had reserved
    assert rerun_output == out / f"{STEM}_v001.nxs"
    done = read_merged(rerun_output)
    assert done["status"] == "complete" and done["frame_number"].tolist() == list(range(1, FRAMES + 1))
    assert sorted(p.name for p in out.iterdir()) == [f"{STEM}.nxs.part", f"{STEM}_v001.nxs"]
    _no_process_left(out)


def test_the_killed_run_is_not_resumed_by_a_reader_opening_nxs_files(killed_then_rerun):
    out, _, _ = killed_then_rerun
    # Dioptas and friends list *.nxs: the killed run's file is not among them
    assert [p.name for p in out.glob("*.nxs")] == [f"{STEM}_v001.nxs"]
    assert os.path.getsize(out / f"{STEM}.nxs.part") > 0
