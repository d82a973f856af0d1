"""Truncated and still-growing module files, in both compressions, offline and live.

Each test damages a real file on disk, runs the real thing (the ``integrate`` command, the live
stages) and checks the result frame by frame against a run on the undamaged files: nothing that
was readable is lost, nothing unreadable is reported as integrated, and the status is honest.
"""

import threading

import numpy as np
import pytest

from pipeline_core.cli import main as cli_main
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.work_source import InProcessWorkSource
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import wait_for, write_small_acquisition

COMPRESSIONS = ["gzip", "bslz4"]
BINS = 16


def _integrate(tmp_path, source, poni, name):
    out = tmp_path / f"{name}.nxs"
    status = cli_main(["integrate", str(source), "--poni", str(poni), "--bins", str(BINS), "-o", str(out)])
    return status, out


def _reference_rows(tmp_path, acq, poni, compression):
    """Rows of an undamaged copy of the same acquisition (same bytes, another directory)."""
    clean = write_small_acquisition(tmp_path / "clean", n_parts=3, compression=compression)
    status, out = _integrate(tmp_path, clean["files"][0], poni, "clean")
    assert status == 0
    m = read_merged(out)
    return {int(n): row for n, row in zip(m["frame_number"], m["data"], strict=True)}


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_truncated_module_file_costs_its_part_only(tmp_path, small_poni, compression, capsys, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, compression=compression)
    reference = _reference_rows(tmp_path, acq, small_poni, compression)
    victim = tmp_path / "raw" / "scan_00001_m2_part00001.nxs"
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) * 2 // 3])  # the tail never came (disk full, copy cut short)
    ledger.fault(f"truncated {compression} file")

    status, out = _integrate(tmp_path, acq["files"][0], small_poni, "damaged")

    assert status == 1  # frames failed: the command says so
    assert "truncated" in capsys.readouterr().err
    m = read_merged(out)
    assert m["status"] == "incomplete"
    assert m["frame_number"].tolist() == [1, 2, 3, 7, 8, 9]  # part 1 (frames 4-6) is not in the file
    for number, row in zip(m["frame_number"], m["data"], strict=True):
        np.testing.assert_array_equal(row, reference[int(number)])
    assert m["failed_frames"] == ["4-6"]
    ledger.checked(9)
    assert m["failed_files"][0].endswith("scan_00001_m1_part00001.nxs")  # the part, as Dioptas lists it
    assert victim.name in m["failed_reasons"][0] and "truncated" in m["failed_reasons"][0]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_file_still_growing_when_read_is_waited_for(tmp_path, small_poni, compression, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, compression=compression)
    reference = _reference_rows(tmp_path, acq, small_poni, compression)
    victim = tmp_path / "raw" / "scan_00001_m3_part00002.nxs"
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])  # the detector is still writing it
    ledger.fault(f"growing {compression} file")
    finisher = threading.Timer(0.4, victim.write_bytes, args=(whole,))
    finisher.start()
    try:
        status, out = _integrate(tmp_path, acq["files"][0], small_poni, "growing")
    finally:
        finisher.join()

    assert status == 0
    m = read_merged(out)
    assert m["status"] == "complete" and m["failed_frames"] == []
    assert m["frame_number"].tolist() == list(range(1, 10))
    ledger.checked(9)
    for number, row in zip(m["frame_number"], m["data"], strict=True):
        np.testing.assert_array_equal(row, reference[int(number)])


class _Chain:
    """Stitch → one Integrator → merge, wired in-process (no Tango), as the devices wire them."""

    def __init__(self, tmp_path, settings, module_timeout_s):
        self.errors: list[str] = []
        self.closed = []
        self.stitch = StitchStage(
            StitchConfig(frames_per_item=2, module_timeout_s=module_timeout_s, open_retries=0),
            on_scan=lambda info: self.merge.scan_started(info),
            on_work=lambda n: self.integrate.wake(),
            on_error=self.errors.append,
        )
        self.merge = MergeStage(tmp_path / "out", self.closed.append, self.errors.append, scan_timeout_s=30)
        self.integrate = IntegrateStage(
            "int0",
            settings,
            InProcessWorkSource(self.stitch),
            self.merge.add_batch,
            self.errors.append,
            poll_interval_s=0.1,
        )
        self.integrate.start()

    def stop(self):
        self.integrate.stop()
        self.stitch.stop()
        self.merge.stop()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_live_a_part_announced_while_still_being_written_is_merged_once_complete(
    tmp_path, small_poni, compression, ledger
):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, compression=compression, record_total=True)
    victim = tmp_path / "raw" / "scan_00001_m1_part00001.nxs"
    whole = victim.read_bytes()
    victim.write_bytes(whole[: len(whole) // 2])
    ledger.fault(f"growing {compression} file")
    chain = _Chain(tmp_path, IntegrationSettings(small_poni, bins=BINS), module_timeout_s=20)
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.counters.parts_done == 1, what="the complete part")
        assert chain.stitch.counters.frames_failed == 0  # the growing part waits, it is not failed
        victim.write_bytes(whole)  # the detector finishes writing
        wait_for(lambda: len(chain.closed) == 1, what="the scan to close")
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["status"] == "complete"
    assert m["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    ledger.checked(6)
    assert np.all(m["data"].sum(axis=1) > 0)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_live_a_part_that_stays_truncated_is_listed_as_failed(tmp_path, small_poni, compression, ledger):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, compression=compression, record_total=True)
    victim = tmp_path / "raw" / "scan_00001_m3_part00000.nxs"
    victim.write_bytes(victim.read_bytes()[:2500])
    ledger.fault(f"truncated {compression} file")
    chain = _Chain(tmp_path, IntegrationSettings(small_poni, bins=BINS), module_timeout_s=1.0)
    try:
        for f in acq["files"]:
            chain.stitch.announce(str(f))
        wait_for(lambda: len(chain.closed) == 1, what="the scan to close")
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["status"] == "incomplete"
    assert m["frame_number"].tolist() == [4, 5, 6]
    assert m["failed_frames"] == ["1-3"]
    ledger.checked(6)
    assert "truncated" in m["failed_reasons"][0] and victim.name in m["failed_reasons"][0]
    assert any("truncated" in e for e in chain.errors)  # the device would show it in Status
