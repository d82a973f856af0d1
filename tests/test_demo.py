"""The main job as a user runs it: `xrd-pipeline demo` in its own process, also interrupted by Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pipeline_core.nexus import read_merged

from .conftest import REPO


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


def test_demo_runs_the_whole_chain_and_leaves_nothing_running(tmp_path):
    proc = _demo(tmp_path, "--frames", "40", "--rate", "40")
    children: set[int] = set()
    while proc.poll() is None:
        children |= {p.pid for p in _descendants(proc.pid)}
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    merged = Path(out.split("merged file:")[1].split()[0])
    png = Path(out.split("heatmap:")[1].split()[0])
    assert merged.parent == tmp_path / "processed" and png.stat().st_size > 10_000
    assert read_merged(merged)["frame_number"].tolist() == list(range(1, 41))
    assert "40 frames merged, 0 failed" in err
    assert len(children) >= 6  # database + 5 device servers
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_ctrl_c_stops_everything_cleanly(tmp_path):
    proc = _demo(tmp_path, "--frames", "2000", "--rate", "20")
    deadline = time.monotonic() + 90
    children: set[int] = set()
    while time.monotonic() < deadline and not list((tmp_path / "raw").glob("*_part00000.nxs")):
        children |= {p.pid for p in _descendants(proc.pid)}
        time.sleep(0.2)
    children |= {p.pid for p in _descendants(proc.pid)}
    assert len(children) >= 6
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the device servers" in err and "interrupted" in err
    time.sleep(0.5)
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
