"""A stage's worker stops within a bound, whatever is queued (issue: a Stitcher not exiting 60 s
after SIGTERM). Before: ``Worker.stop`` put its stop mark at the END of the queue -- every queued job
ran first -- and ``queue.put`` blocked for ever on a full bounded queue. Now: a stop flag checked
before each job, queued jobs dropped (or drained for a bounded time), the stage's ``final`` job run
last, one deadline for every join."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.deadline import STOP_BUDGET_S, Deadline
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_stage import MERGE_DRAIN_S, MergeStage
from pipeline_core.live.triggers.watch import DirectoryWatch, WatchConfig
from pipeline_core.live.worker import Worker
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import REPO, pattern_batch, wait_for

#: a stop that does not wait for the backlog returns within this (the jobs below take 20 ms each)
BOUND_S = 3.0


class Gate:
    """A handler that records each job and holds the first one until ``release``."""

    def __init__(self) -> None:
        self.ran: list[object] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, job: object) -> None:
        self.ran.append(job)
        if len(self.ran) == 1:
            self.entered.set()
            assert self.release.wait(30), "the test never released the first job"


def _stop_in_background(stop) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        stop()
        took.append(time.monotonic() - t0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, took


def test_a_full_bounded_queue_does_not_block_the_stop():
    gate = Gate()
    worker = Worker("test-full", gate, lambda _msg: None, maxsize=2)
    worker.submit("first")
    assert gate.entered.wait(10)
    worker.submit("queued-1")
    worker.submit("queued-2")  # the queue is full now: the old stop blocked here for ever
    thread, took = _stop_in_background(lambda: worker.stop(1.0))
    thread.join(30)  # the old stop blocked for ever: no timing asked, only that it returned
    assert not thread.is_alive(), "stop blocked on the full queue"
    gate.release.set()
    wait_for(lambda: not worker._thread.is_alive(), 10, "the worker to end")
    assert gate.ran == ["first"] and worker.dropped == 2  # the queued jobs were not run


def test_a_stop_does_not_run_the_backlog():
    ran: list[int] = []
    worker = Worker("test-backlog", lambda n: (ran.append(n), time.sleep(0.02)), lambda _msg: None)
    for n in range(500):  # 10 s of work queued: the old stop ran it all (and gave up joining at 10 s)
        worker.submit(n)
    assert worker.stop(BOUND_S)
    done = len(ran)
    assert done < 100 and worker.dropped == 500 - done
    worker.submit("after the stop")
    assert len(ran) == done and "after the stop" not in ran


def test_the_final_job_runs_after_the_current_one_and_nothing_queued_does():
    gate = Gate()
    worker = Worker("test-final", gate, lambda _msg: None)
    worker.submit("current")
    assert gate.entered.wait(10)
    for n in range(50):
        worker.submit(n)
    thread, _ = _stop_in_background(lambda: worker.stop(10.0, final="final"))
    wait_for(lambda: worker.stopping, 10, "the stop flag")
    gate.release.set()
    thread.join(10)
    assert gate.ran == ["current", "final"]


def test_a_thread_that_does_not_end_is_named_and_not_waited_for(caplog):
    gate = Gate()
    worker = Worker("xrd-stuck", gate, lambda _msg: None)
    worker.submit("stuck")
    assert gate.entered.wait(10)
    with caplog.at_level(logging.WARNING):
        assert worker.stop(Deadline(0.3)) is False  # gave up at its deadline, the thread still held
    assert "xrd-stuck" in caplog.text and "0.3 s stop budget" in caplog.text
    gate.release.set()


def test_a_deadline_refuses_a_negative_budget():
    with pytest.raises(ValueError, match=r"-1 s; expected seconds >= 0"):
        Deadline(-1)


def _merger_with_a_backlog(tmp_path, small_poni):
    """A Merger whose first batch (frames 1-4 of 800) is held in its progress callback while 99 more
    batches queue behind it."""
    settings = IntegrationSettings(small_poni, bins=4)
    release, held = threading.Event(), threading.Event()

    def progress() -> None:
        if not held.is_set():
            held.set()
            assert release.wait(30)

    closed: list = []
    stage = MergeStage(tmp_path, closed.append, lambda _msg: None, on_progress=progress)
    stage.add_batch(pattern_batch(settings, [1, 2, 3, 4], total=800))
    assert held.wait(30), "the first batch was never merged"
    for k in range(1, 100):
        stage.add_batch(pattern_batch(settings, list(range(4 * k + 1, 4 * k + 5)), part=k, total=800))
    return stage, release, closed


def test_a_stopping_merger_suspends_its_file_with_batches_still_queued(tmp_path, small_poni):
    stage, release, closed = _merger_with_a_backlog(tmp_path, small_poni)
    thread, took = _stop_in_background(lambda: stage.stop(Deadline(20.0), drain_s=0.0))
    wait_for(lambda: stage._worker.stopping, 10, "the stop flag")
    release.set()
    thread.join(20)
    assert took, "the stop did not return"
    path = tmp_path / "scan.nxs"
    merged = read_merged(path.with_name("scan.nxs.part"))
    assert merged["status"] == "interrupted"  # suspended by SuspendAll, not closed: no scan.nxs
    assert merged["frame_number"].tolist() == [1, 2, 3, 4]  # the queued batches were not merged
    assert journal_path(path).exists() and not path.exists() and closed == []
    assert stage._worker.dropped == 99


def test_a_stopping_merger_merges_what_is_queued_within_its_drain_time(tmp_path, small_poni):
    stage, release, closed = _merger_with_a_backlog(tmp_path, small_poni)
    thread, _ = _stop_in_background(lambda: stage.stop(Deadline(60.0), drain_s=60.0))
    wait_for(lambda: stage._worker.stopping, 10, "the stop flag")
    release.set()
    thread.join(60)
    path = tmp_path / "scan.nxs"
    merged = read_merged(path.with_name("scan.nxs.part"))
    assert merged["status"] == "interrupted" and closed == [] and not path.exists()  # 800 due: suspended
    assert merged["frame_number"].tolist() == list(range(1, 401))  # every queued batch merged first
    assert stage._worker.dropped == 0


def test_readme_gives_the_stop_budget_and_the_mergers_drain_time_in_force():
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| SIGINT, SIGTERM"))
    assert f"within one {STOP_BUDGET_S:g} s budget for all its threads" in row, row
    assert f"the Merger merges what is queued for {MERGE_DRAIN_S:g} s, then suspends" in row, row


def test_a_watch_stops_within_its_deadline_and_announces_nothing_after(tmp_path, caplog):
    """The sweep thread held in an announcement: stop returns at its deadline (naming the thread), and
    the files found in the same sweep are not announced once it is stopping (the next start's sweep
    takes them)."""
    old = time.time() - 10
    for p in range(5):
        path = tmp_path / f"scan_00001_m1_part{p:05d}.nxs"
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    gate = Gate()
    errors: list[str] = []
    config = WatchConfig((str(tmp_path),), stable_s=0.05, sweep_s=0.05, use_inotify=False)
    watch = DirectoryWatch(config, gate, errors.append)
    watch.start()
    assert gate.entered.wait(10), "the sweep announced nothing"
    with caplog.at_level(logging.WARNING):
        assert watch.stop(Deadline(0.3)) is False  # gave up at its deadline, the sweep still held
    assert "xrd-watch-sweep" in caplog.text
    gate.release.set()
    wait_for(lambda: not watch._sweeper.is_alive(), 10, "the sweep thread to end")
    assert len(gate.ran) == 1 and watch.files_taken == 1 and errors == []
