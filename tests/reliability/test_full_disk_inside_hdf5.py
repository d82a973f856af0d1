"""A disk that fills *after* the free-space check said there was room: the Merger neither crashes
nor loses its scan.

The check (``SpaceGuard``) races every other writer of the disk. Before, HDF5 itself met ENOSPC:
in the pressure write at a scan's close (outside the writer's ENOSPC handling: "pressure not
written", then the close segfaulted the process), or in the failure list written at the close (the
scan was suspended right, but its resume could not recreate a file HDF5 still held open — "unable to
truncate a file which is already open" — the scan was dropped, and the process segfaulted at exit).

Here the disk is real (a small tmpfs, mounted as root; skipped where mounting is not permitted),
the check is made to say "room" once while it is full (another writer took the room after it), and
the Merger's stage runs in a child process so that a segfault is seen as one (rc -11).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.science.nexus_pressure import read_pressure

from ..helpers import REPO
from ..pressure_patterns import OVERLAP
from .test_full_disk import tmpfs  # noqa: F401  (the fixture: a small file system of its own)

#: the child's head: a check that says "room" while ``lie[0]``, and the stage's error callback that
#: ends the lie (the race happened once; from then on the check sees the full disk as it is)
_COMMON = """
import json, sys
from pathlib import Path
import numpy as np
import pipeline_core.formats.hdf5_io as hio
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_stage import MergeStage
from tests.helpers import wait_for
from tests.reliability.test_full_disk import fill

mnt = Path(sys.argv[1])
real_free, lie = hio.free_bytes, [False]
hio.free_bytes = lambda folder: (1 << 40) if lie[0] else real_free(folder)
closed, errors, seen = [], [], {}

def said(message):
    errors.append(message)
    lie[0] = False

def waiting(part):
    r = read_merged(part)
    return {"status": r["status"], "frames": r["frame_number"].tolist()}
"""

_PRESSURE = """
from pipeline_core.live.merge_pressure import LivePressure, settings_from_properties
from pipeline_core.processing.integrate import IntegrationSettings
from tests.pressure_patterns import BINS, PONI, make_patterns
from tests.test_pressure_live import PERIOD_S, PRESSURES, _batch

class Racing(LivePressure):
    '''Another writer fills the disk between the rows' merge and the pressure write (once).'''
    def write(self, *args, **kwargs):
        if not seen:
            seen["filler"] = str(fill(mnt, leave=0))
            lie[0] = True
        return super().write(*args, **kwargs)

radial, rows = make_patterns(tuple(PRESSURES)).integrate()
settings = IntegrationSettings(PONI, bins=BINS, unit="2th_deg")
stage = MergeStage(mnt, closed.append, said, gap_check_s=600, scan_timeout_s=600,
                   pressure=Racing(settings_from_properties("au", "", "", 0.0), said, PERIOD_S))
stage.add_batch(_batch(settings, radial, rows, list(range(1, len(rows) + 1)), 0))
wait_for(lambda: errors, 120, "the full disk reported")
wait_for(lambda: stage.queue_depth == 0 and not stage._open, 30, "the scan set aside")
seen["waiting"] = waiting(mnt / "ramp.nxs.part")
Path(seen["filler"]).unlink()
wait_for(lambda: closed, 60, "the scan closed once room came back")
stage.stop()
print(json.dumps({"errors": errors, "closed": str(closed[0].path), "seen": seen,
                  "rate": stage.pressure.reading.rate_gpa_s}))
"""

_FAILURE = """
from pipeline_core.processing.integrate import IntegrationSettings
from tests.helpers import SMALL_PONI, pattern_batch

poni = mnt.parent / "small.poni"
poni.write_text(SMALL_PONI)
settings = IntegrationSettings(poni, bins=2048)
stage = MergeStage(mnt, closed.append, said, gap_check_s=600, scan_timeout_s=600)
stage.add_batch(pattern_batch(settings, [1, 2, 3], total=4, bins=2048))
wait_for(lambda: stage.counters.frames_processed == 3, 60, "frames 1-3 merged")
filler = fill(mnt, leave=0)
lie[0] = True
stage.finish("scan")  # frame 4 never came: its failure, then the status, meet the full disk
wait_for(lambda: errors, 60, "the full disk reported")
wait_for(lambda: stage.queue_depth == 0 and not stage._open, 30, "the scan set aside")
seen["waiting"] = waiting(mnt / "scan.nxs.part")
filler.unlink()
wait_for(lambda: closed, 60, "the scan closed once room came back")
stage.stop()
print(json.dumps({"errors": errors, "closed": str(closed[0].path), "seen": seen}))
"""


def _run_child(body: str, mnt: Path) -> dict:
    """The stage in a child process (a segfault is its exit status); its JSON report."""
    code = textwrap.dedent(_COMMON) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code, str(mnt)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])  # was -11 (SIGSEGV)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _left(mnt: Path) -> list[str]:
    return sorted(p.name for p in mnt.iterdir() if not p.name.startswith("."))


def test_the_pressure_write_meets_a_full_disk_and_the_scan_closes_with_it_once_room_is_back(tmpfs, ledger):  # noqa: F811
    report = _run_child(_PRESSURE, tmpfs)
    ledger.fault("a disk filled after the check, at the pressure write")
    errors = report["errors"]
    # one error, naming the write and the wait (before: "no /processed/pressure", then a segfault)
    assert len(errors) == 1, errors
    assert f"no space left in {tmpfs} for the pressure of {tmpfs / 'ramp.nxs.part'}" in errors[0], errors
    assert "waits for room" in errors[0]
    # while it waited: the part as its last write left it, every frame once, status running
    assert report["seen"]["waiting"] == {"status": "running", "frames": list(range(1, 42))}
    assert report["closed"] == str(tmpfs / "ramp.nxs") and _left(tmpfs) == ["ramp.nxs"]
    result = read_merged(tmpfs / "ramp.nxs")
    assert result["status"] == "complete" and result["frame_number"].tolist() == list(range(1, 42))
    with h5py.File(tmpfs / "ramp.nxs", "r") as h5:
        written = read_pressure(h5)
        rate = float(h5["processed/pressure/compression_rate"][()])
    assert written["frame_number"].tolist() == list(range(1, 42))
    clean = np.array([k not in OVERLAP for k in range(41)])
    ramp = np.linspace(0.0, 100.0, 41)  # the gold ramp the patterns were made from (Fei 2007 scale)
    assert np.abs(written["pressure"][clean] - ramp[clean]).max() < 0.05
    # the live tracker (its frame period) was kept through the wait: 2.5 GPa a frame at 50 ms a frame
    assert rate == pytest.approx(50.0, rel=0.01) and report["rate"] == rate
    ledger.checked(41)


def test_the_failure_and_status_writes_meet_a_full_disk_and_the_scan_resumes_in_the_same_process(tmpfs, ledger):  # noqa: F811
    report = _run_child(_FAILURE, tmpfs)
    ledger.fault("a disk filled after the check, at the failure and status writes")
    errors = report["errors"]
    # before: a second error "cannot continue after the full disk (... already open)" and the scan lost
    assert len(errors) == 1, errors
    assert f"no space left in {tmpfs} for the failure of frames 4 in {tmpfs / 'scan.nxs.part'}" in errors[0]
    assert "waits for room" in errors[0]
    # the status write met the full disk too: the part says running, not a status it could not write
    assert report["seen"]["waiting"] == {"status": "running", "frames": [1, 2, 3]}
    assert report["closed"] == str(tmpfs / "scan.nxs") and _left(tmpfs) == ["scan.nxs"]
    result = read_merged(tmpfs / "scan.nxs")
    assert result["status"] == "incomplete"
    assert result["frame_number"].tolist() == [1, 2, 3]
    assert result["data"][:, 0].tolist() == [1.0, 2.0, 3.0]
    assert result["failed_frames"] == ["4"]
    assert result["failed_reasons"][0].startswith("never arrived (stopped by the operator"), result["failed_reasons"]
    ledger.checked(4)

