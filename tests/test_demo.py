"""The main job as a user runs it: `xrd-pipeline demo` in its own process, also interrupted by Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from pipeline_core.formats.nexus import read_merged

from .helpers import REPO, wait_for


def _demo(workdir: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}  # the embedded default
    return subprocess.Popen(
        [sys.executable, "-m", "tango_servers.cli", "demo", "--workdir", str(workdir), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _left(children: dict[int, psutil.Process]) -> list[int]:
    """The children still running (psutil handles notice a reused pid)."""
    alive = []
    for pid, p in children.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _record_children(proc: subprocess.Popen, children: dict[int, psutil.Process], done: threading.Event) -> None:
    """Collect every process the demo starts until it exits (polled: psutil has no spawn events)."""
    while not done.is_set() and proc.poll() is None:
        children.update({p.pid: p for p in _descendants(proc.pid)})
        done.wait(0.1)


def test_demo_runs_the_whole_chain_and_leaves_nothing_running(tmp_path):
    proc = _demo(tmp_path, "--frames", "40", "--rate", "40")
    children: dict[int, psutil.Process] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_record_children, args=(proc, children, done), daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=300)
    done.set()
    watcher.join()
    assert proc.returncode == 0, err[-3000:]
    merged = Path(out.split("merged file:")[1].split()[0])
    png = Path(out.split("heatmap:")[1].split()[0])
    assert merged.parent == tmp_path / "processed" and png.stat().st_size > 10_000
    assert read_merged(merged)["frame_number"].tolist() == list(range(1, 41))
    assert "40 frames merged, 0 failed" in err
    _assert_pressure_is_the_ramps(out, merged, frames=40, rate=40.0)
    assert len(children) >= 6  # database + 5 device servers
    assert not _left(children)  # the demo waited for each one before it exited


def _assert_pressure_is_the_ramps(out: str, merged: Path, frames: int, rate: float) -> None:
    """Issue 19: the demo's Merger follows gold; its printed final pressure is the file's and the one
    the simulator's ramp put in (Fei 2007, 0 to 100 GPa, linear), its rate the ramp's GPa/s."""
    import h5py

    from pipeline_core.science.nexus_pressure import read_pressure
    from pipeline_core.simulate import AU_P_END, pressure_gpa

    line = next(s for s in out.splitlines() if s.startswith("pressure:"))
    found = re.search(r"(?:^pressure:\s+|last value )([\d.]+) ± ([\d.]+) GPa at frame (\d+);.* compression rate "
                      r"([\d.]+) GPa/s$", line)  # fmt: skip
    assert found, line
    value, sigma, frame, printed_rate = float(found[1]), float(found[2]), int(found[3]), float(found[4])
    with h5py.File(merged, "r") as h5:
        written = read_pressure(h5)
    k = written["frame_number"].tolist().index(frame)
    assert (value, sigma) == (round(written["pressure"][k], 2), round(written["pressure_errors"][k], 2)), line
    assert frame == frames and line.startswith(f"pressure:    {value:.2f} ±"), line  # the last frame has one
    assert abs(value - pressure_gpa(frame - 1, frames)) < 0.1 and pressure_gpa(frame - 1, frames) == AU_P_END, line
    assert printed_rate == pytest.approx(AU_P_END / (frames - 1) * rate, rel=0.02), line


def test_ctrl_c_stops_everything_cleanly(tmp_path):
    proc = _demo(tmp_path, "--frames", "2000", "--rate", "20")
    try:
        wait_for(
            lambda: any((tmp_path / "raw").glob("*_part00000.nxs")) or proc.poll() is not None,
            180,
            "the demo's first part file",
        )
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        children = {p.pid: p for p in _descendants(proc.pid)}  # all started before the acquisition
        assert len(children) >= 6
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the device servers" in err and "interrupted" in err
    assert not _left(children)  # stopped and waited for before the demo exited: no grace period needed


def test_the_demo_writes_its_calibration_again_only_when_it_changed(tmp_path):
    """`demo --workdir SAME` after an interrupted demo: the PONI (whose comment pyFAI dates) and the mask
    are left as they are, so the resumed scan's settings are those it was queued with."""
    from pipeline_core.processing.integrate import IntegrationSettings
    from tango_servers.demo import demo_calibration

    poni, mask = demo_calibration(tmp_path / "calibration")
    settings = IntegrationSettings(poni, mask_path=mask)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (poni, mask)}
    fingerprint = settings.fingerprint()
    assert demo_calibration(tmp_path / "calibration") == (poni, mask)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (poni, mask)} == before  # not written again
    assert sorted(p.name for p in poni.parent.iterdir()) == sorted([poni.name, mask.name])  # no staging left
    text = poni.read_text()
    poni.write_text(text.replace("Calibration done", "Calibrated"))  # a comment: still the demo's geometry
    demo_calibration(tmp_path / "calibration")
    assert "Calibrated" in poni.read_text() and settings.fingerprint() == fingerprint
    poni.write_text(text.replace("Distance: 0.3", "Distance: 0.25"))  # another geometry: the demo's again
    demo_calibration(tmp_path / "calibration")
    assert "Distance: 0.3\n" in poni.read_text() and settings.fingerprint() == fingerprint
