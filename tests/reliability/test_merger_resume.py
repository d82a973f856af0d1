"""The Merger's journal and row log: a Merger killed with its file open resumes the same file on
restart, rebuilt from its row log whatever the kill left in the HDF5 bytes."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live import merge_log
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import REPO, pattern_batch, wait_for

_batch = pattern_batch  # FIRST_MERGER imports it by this name

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
        ledger.fault("SIGKILL to a merging process")
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


def test_an_unreadable_file_is_not_resumed_and_says_why(tmp_path, small_poni, ledger):
    settings = IntegrationSettings(small_poni, bins=4)
    ledger.fault("an open file that is not HDF5")
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


def test_a_merger_shut_down_mid_scan_suspends_and_the_next_one_resumes(tmp_path, small_poni, ledger):
    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    first = MergeStage(tmp_path, closed.append, errors.append)
    first.add_batch(_batch(settings, [1, 2, 3, 4]))
    wait_for(lambda: first.counters.frames_processed == 4)
    first.stop()  # a graceful restart of the server (SIGTERM)
    ledger.fault("Merger stopped mid-scan")
    assert closed == [] and journal_path(tmp_path / "scan.nxs").exists()
    assert read_merged(tmp_path / "scan.nxs.part")["status"] == "interrupted"  # not published: no scan.nxs
    assert not (tmp_path / "scan.nxs").exists()
    second = MergeStage(tmp_path, closed.append, errors.append)
    second.add_batch(_batch(settings, [5, 6, 7, 8], part=1))
    wait_for(lambda: len(closed) == 1)
    second.stop()
    assert closed[0].path == tmp_path / "scan.nxs" and closed[0].complete
    assert read_merged(closed[0].path)["frame_number"].tolist() == list(range(1, 9))


def test_a_resume_rebuilds_the_file_from_its_log_not_from_what_the_kill_left_in_the_hdf5(tmp_path, small_poni, ledger):
    """A kill -9 in the middle of an HDF5 flush leaves bytes no reader can trust ("bad heap index",
    rows whose numbers and intensities are from different moments): the resume never reads them."""
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST_MERGER, str(tmp_path), str(small_poni)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert first.stdout.readline().strip() == "merged 4", first.stdout.read()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        first.stdout.close()
    path = tmp_path / "scan.nxs"
    part, rowlog = path.with_name("scan.nxs.part"), merge_log.log_path(path)
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 3 :] = random.Random(7).randbytes(len(raw) - len(raw) // 3)  # a flush the kill cut short
    part.write_bytes(bytes(raw))
    record = merge_log.Record("rows", arrays={"numbers": np.arange(5, 9), "data": np.zeros((4, 4), np.float32)})
    rowlog.write_bytes(rowlog.read_bytes() + record.encode()[:-7])  # and a record the kill cut short
    ledger.fault("kill -9 mid-flush: garbage in the HDF5 part and a torn row-log record")

    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    second = MergeStage(tmp_path, closed.append, errors.append)
    second.add_batch(_batch(settings, [5, 6, 7, 8], part=1))
    wait_for(lambda: len(closed) == 1)
    second.stop()
    assert errors == [] and closed[0].path == path and closed[0].complete
    m = read_merged(path)
    assert m["frame_number"].tolist() == list(range(1, 9)) and m["data"][:, 0].tolist() == list(range(1, 9))
    assert m["files"] == ["/raw/scan_m1_part00000.nxs", "/raw/scan_m1_part00001.nxs"] and m["status"] == "complete"
    assert m["file_map"].tolist() == [0, 4, 8]
    assert not rowlog.exists() and not journal_path(path).exists(), "a finished file needs neither"
    ledger.checked(8)


#: A MergeStage in its own process, merging ``total`` frames (intensity = frame number, 2048 bins) in
#: batches in a shuffled order, as fast as it can, until it is killed; a new one resumes what is there.
BUSY_MERGER = """
import random, sys, time
import numpy as np
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.live.merge_stage import MergeStage
from tests.reliability.test_merger_resume import _batch

out, poni, total, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
settings = IntegrationSettings(poni, bins=2048)
stage = MergeStage(out, print, print)
chunks = [list(range(i, min(i + 6, total + 1))) for i in range(1, total + 1, 6)]
random.Random(seed).shuffle(chunks)
print("started", flush=True)
for numbers in chunks:
    stage.add_batch(_batch(settings, numbers, part=(numbers[0] - 1) // 60, total=total, bins=2048))
time.sleep(600)
"""


def test_kill_9_at_random_moments_while_merging_never_mixes_rows_and_the_file_completes(tmp_path, small_poni, ledger):
    """The fault CI found: a Merger killed while it writes. Killed five times at random moments while
    merging out-of-order batches (2048 bins: flushes take time), each new process resuming; every
    row of the file it finally closes holds its own frame's intensities, each frame exactly once."""
    total, kills = 1200, 5
    rng = random.Random(11)
    closed = []
    for attempt in range(kills + 1):
        proc = subprocess.Popen(
            [sys.executable, "-c", BUSY_MERGER, str(tmp_path), str(small_poni), str(total), str(attempt)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout.readline().strip() == "started"
            if attempt < kills:
                time.sleep(rng.uniform(0.05, 1.0))  # merging all of it takes about 1.3 s
                proc.send_signal(signal.SIGKILL)
                ledger.fault("kill -9 of a busy Merger")
            else:
                wait_for(lambda: any(tmp_path.glob("scan*.nxs")), 60, "the last Merger to close the file")
        finally:
            proc.kill()
            out, _ = proc.communicate(30)
        assert "Traceback" not in out and "cannot resume" not in out, out[-3000:]
        closed = sorted(tmp_path.glob("scan*.nxs"))
    assert [p.name for p in closed] == ["scan.nxs"], "one file, resumed each time"
    m = read_merged(closed[0])
    assert m["status"] == "complete" and m["frame_number"].tolist() == list(range(1, total + 1))
    assert (m["data"] == m["frame_number"][:, None]).all(), "a row holds another frame's intensities"
    assert m["pos_map"][:, 0].tolist() == [(n - 1) // 60 for n in range(1, total + 1)]
    ledger.checked(total)
