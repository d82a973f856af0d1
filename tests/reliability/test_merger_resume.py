"""The Merger's journal: a Merger killed with its file open resumes the same file on restart."""

import json
import signal
import subprocess
import sys

import numpy as np

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import REPO, wait_for


def _batch(settings, numbers, part=0, total=8):
    n = len(numbers)
    return PatternBatch(
        f"scan:{part}:{numbers[0]}",
        "scan",
        "lambda",
        "int0",
        part,
        "fp",
        np.array(numbers),
        np.arange(n),
        np.tile(np.array(numbers, np.float32)[:, None], (1, 4)),
        np.arange(4.0),
        settings=settings.to_dict(),
        raw_file=f"/raw/scan_m1_part{part:05d}.nxs",
        total_frames=total,
    )


#: A MergeStage in its own process: merges frames 1-4 of "scan" (of 8), says so, then waits to be killed.
FIRST_MERGER = """
import sys, time
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.live.merge_stage import MergeStage
from tests.reliability.test_merger_resume import _batch

settings = IntegrationSettings(sys.argv[2], bins=4)
stage = MergeStage(sys.argv[1], print, print)
stage.add_batch(_batch(settings, [1, 2]))
stage.add_batch(_batch(settings, [3, 4]))
while stage.counters.frames_processed < 4:
    time.sleep(0.01)
print("merged 4", flush=True)
time.sleep(600)
"""


def test_a_killed_merger_resumes_its_open_file_without_duplicates(tmp_path, small_poni, ledger):
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_MERGER, str(tmp_path), str(small_poni)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout.readline().strip() == "merged 4", first.stdout.read()
    finally:
        first.send_signal(signal.SIGKILL)  # kill -9 with the file open: nothing is closed or suspended
        first.wait(30)
        first.stdout.close()
    assert first.returncode == -signal.SIGKILL
    path = tmp_path / "scan.nxs"
    assert json.loads(journal_path(path).read_text())["scan"] == "scan"
    assert not path.exists()  # while open the bytes are at scan.nxs.part: never taken for a finished file
    left = read_merged(path.with_name("scan.nxs.part"))  # flushed after each batch: readable
    assert left["frame_number"].tolist() == [1, 2, 3, 4] and left["status"] == "running"
    ledger.checked(len(left["frame_number"]))

    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    second = MergeStage(tmp_path, closed.append, errors.append)
    second.add_batch(_batch(settings, [3, 4]))  # a late duplicate of what was merged before the kill
    second.add_batch(_batch(settings, [5, 6, 7, 8], part=1))
    wait_for(lambda: len(closed) == 1)
    second.stop()
    m = read_merged(closed[0].path)
    assert closed[0].path == path  # the same file, not scan_v001.nxs
    assert m["frame_number"].tolist() == list(range(1, 9))
    ledger.checked(len(m["frame_number"]))
    assert m["data"][:, 0].tolist() == list(range(1, 9))
    assert m["status"] == "complete" and not journal_path(path).exists() and errors == []
    assert closed[0].duplicates_ignored == 2


def test_an_unreadable_file_is_not_resumed_and_says_why(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    (tmp_path / "scan.nxs").write_bytes(b"not HDF5 at all")
    journal_path(tmp_path / "scan.nxs").write_text(
        json.dumps({"scan": "scan", "settings": settings.to_dict(), "settings_hash": "fp", "total_frames": 2})
    )
    closed, errors = [], []
    stage = MergeStage(tmp_path, closed.append, errors.append)
    stage.add_batch(_batch(settings, [1, 2], total=2))
    wait_for(lambda: len(closed) == 1)
    stage.stop()
    assert any("cannot resume" in e and "scan.nxs" in e for e in errors)
    assert closed[0].path.name == "scan_v001.nxs"  # the broken file is left as it was, never overwritten
    assert (tmp_path / "scan.nxs").read_bytes() == b"not HDF5 at all"


def test_a_merger_shut_down_mid_scan_suspends_and_the_next_one_resumes(tmp_path, small_poni):
    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    first = MergeStage(tmp_path, closed.append, errors.append)
    first.add_batch(_batch(settings, [1, 2, 3, 4]))
    wait_for(lambda: first.counters.frames_processed == 4)
    first.stop()  # a graceful restart of the server (SIGTERM)
    assert closed == [] and journal_path(tmp_path / "scan.nxs").exists()
    assert read_merged(tmp_path / "scan.nxs.part")["status"] == "interrupted"  # not published: no scan.nxs
    assert not (tmp_path / "scan.nxs").exists()
    second = MergeStage(tmp_path, closed.append, errors.append)
    second.add_batch(_batch(settings, [5, 6, 7, 8], part=1))
    wait_for(lambda: len(closed) == 1)
    second.stop()
    assert closed[0].path == tmp_path / "scan.nxs" and closed[0].complete
    assert read_merged(closed[0].path)["frame_number"].tolist() == list(range(1, 9))
