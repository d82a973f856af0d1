"""A read-only output folder: the command says which folder and stops; the Merger says it and waits.

The folder is really read-only: a tmpfs mounted ``ro`` (and remounted ``rw`` to end the fault) where
mounting is permitted (CI runs as root, and root writes through any permission bits); elsewhere a
folder without write permission.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import REPO, SMALL_PONI, pattern_batch, wait_for, write_small_acquisition


class ReadOnlyFolder:
    """A folder that refuses writes until :meth:`make_writable`."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.mounted = os.geteuid() == 0
        if self.mounted:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,ro", "tmpfs", str(path)],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                pytest.skip(f"cannot mount a read-only tmpfs ({done.stderr.strip()})")
        else:
            path.chmod(0o555)

    def make_writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
        else:
            self.path.chmod(0o755)

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        else:
            self.path.chmod(0o755)


@pytest.fixture
def readonly(tmp_path):
    folder = ReadOnlyFolder(tmp_path / "out")
    try:
        with pytest.raises(OSError):
            (folder.path / "probe").write_bytes(b"x")
        yield folder
    finally:
        folder.remove()


def test_integrate_into_a_read_only_folder_names_it_exits_2_and_publishes_nothing(readonly, tmp_path, ledger):
    raw = tmp_path / "raw"
    write_small_acquisition(raw, n_parts=2, frames_per_part=5)
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    for output in (readonly.path, readonly.path / "sub", readonly.path / "named.nxs"):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline_core.cli", "integrate", str(raw), "--poni", str(poni), "--bins", "30",
             "-o", str(output)],
            capture_output=True, text=True, cwd=REPO, timeout=300,
        )  # fmt: skip
        ledger.fault("a read-only output folder under integrate")
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
        assert done.stdout == ""  # no result path printed
        assert "Traceback" not in done.stderr
        folder = output.parent if output.suffix == ".nxs" else output
        assert str(folder) in done.stderr, done.stderr
        assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr, done.stderr
        assert "xrd-pipeline integrate: error:" in done.stderr
    assert list(readonly.path.iterdir()) == []


_batch = functools.partial(pattern_batch, total=6, bins=8)

def test_the_merge_stage_waits_for_a_read_only_folder_then_asks_for_what_it_dropped(readonly, small_poni, ledger):
    """Before: every batch tried to create the file and was lost with an error; nothing was asked
    again once the folder took writes, so a scan whose batches all came meanwhile was never written."""
    settings = IntegrationSettings(small_poni, bins=8)
    closed, errors, asked = [], [], []
    stage = MergeStage(readonly.path, closed.append, errors.append, gap_check_s=1.0, scan_timeout_s=120,
                       request_missing=lambda scan, frames, raw: asked.append((scan, list(frames))))  # fmt: skip
    try:
        for numbers in ([1, 2], [3, 4]):
            stage.add_batch(_batch(settings, numbers))
        wait_for(lambda: stage.counters.frames_received == 4 and stage.queue_depth == 0, 60, "both batches taken")
        ledger.fault("a read-only output folder under the merge stage")
        assert len(errors) == 1, errors  # said once, not once per batch
        assert "cannot create result file" in errors[0] and str(readonly.path) in errors[0], errors
        assert "scan scan waits until" in errors[0], errors
        assert closed == [] and list(readonly.path.iterdir()) == []

        readonly.make_writable()  # no batch comes now: the stage must open the file and ask by itself
        wait_for(lambda: asked, 60, "the frames dropped while the folder was read-only to be asked again")
        assert asked[0] == ("scan", [3, 4, 5, 6])
        stage.add_batch(_batch(settings, [3, 4]))
        stage.add_batch(_batch(settings, [5, 6]))
        wait_for(lambda: closed, 60, "the scan to close")
    finally:
        stage.stop()
    assert closed[0].path == readonly.path / "scan.nxs" and closed[0].complete
    m = read_merged(closed[0].path)
    assert m["status"] == "complete" and m["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    assert m["data"][:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    ledger.checked(6)
    assert len(errors) == 1, errors


def test_a_real_merger_on_a_read_only_folder_says_so_keeps_serving_and_the_scan_completes_later(tmp_path, ledger):
    """The whole chain, the Merger's OutputDirectory read-only during a scan: Status names it, the
    device answers, and once the folder takes writes the scan ends complete, every frame once."""
    import tango

    from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for

    from ..helpers import real_servers
    from .test_process_faults import TUNED, _start_integrator

    specs, names = layout_for(tmp_path, integrators=1)
    output = Path(next(s for s in specs if s.klass == "Merger").properties["OutputDirectory"][0])
    tuned = {**TUNED, "Merger": {"GapCheck": ["2"]}}
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    folder = ReadOnlyFolder(output)
    try:
        with real_servers(tmp_path, specs) as host:

            def proxy(name):
                return tango.DeviceProxy(f"tango://{host}/{name}")

            merger, stitcher, sim = proxy(MERGER), proxy(STITCHER), proxy(SIMULATOR)
            integrator = _start_integrator(host, tmp_path, names[0])
            stitcher.Start()
            sim.FrameNumbers, sim.FramesPerFile, sim.rate = 20, 10, 20.0
            stem = sim.Start()
            wait_for(lambda: "waits until" in merger.status(), 180, f"the Merger to say it cannot write {output}")
            ledger.fault("a read-only output folder under a real Merger")
            status = merger.status()
            assert f"cannot create result file {output}" in status and f"scan {stem}" in status, status
            wait_for(lambda: integrator.framesProcessed == 20, 180, "every frame integrated once")
            assert merger.ping() > 0 and merger.state() != tango.DevState.FAULT  # still serving
            assert merger.lastOutputFile == "" and list(output.iterdir()) == []
            folder.make_writable()
            wait_for(lambda: merger.lastOutputFile != "", 180, f"the merged file of {stem} once the folder is writable")
            path = Path(merger.lastOutputFile)
            assert path == output / f"{stem}.nxs"
            m = read_merged(path)
            assert m["status"] == "complete" and m["frame_number"].tolist() == list(range(1, 21))
            assert m["failed_frames"] == []
            ledger.checked(20)
    finally:
        folder.remove()
