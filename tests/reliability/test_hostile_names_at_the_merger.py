"""Hostile scan and stem names pushed to a real Merger device through Tango events.

tests/reliability/test_merger_confinement.py covers the messages and the merge stage; here a
device upstream of a real Merger (it stands where the Stitcher and an Integrator stand) pushes a
scan announcement whose stem is ``../x`` and pattern batches whose scan names climb out of the
output folder, as a compromised or buggy upstream could: the Merger refuses each, names it in
Status, writes nothing outside its OutputDirectory, and still merges the next good batch.
"""

from __future__ import annotations

import json

import numpy as np
import tango
from tango import AttrWriteType
from tango.server import Device, attribute, command, device_property
from tango.test_context import MultiDeviceTestContext

from pipeline_core.formats.nexus import read_merged
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import wait_for

UPSTREAM, MERGER = "test/hostile/upstream", "test/hostile/merger"
HOSTILE_SCANS = ["../x", "../../outside/evil", "good#../../x"]


class HostileUpstream(Device):
    """Pushes whatever scan announcement or pattern batch a test asks for, unchecked."""

    Poni = device_property(dtype=str, default_value="")

    def init_device(self) -> None:
        super().init_device()
        self._scan_info = ""
        self._patterns: tuple[str, bytes] = ("", b"")
        self.set_change_event("scanInfo", True, False)
        self.set_change_event("patterns", True, False)
        self.set_state(tango.DevState.ON)

    @attribute(dtype=str)
    def scanInfo(self) -> str:
        return self._scan_info

    @attribute(dtype=tango.DevEncoded)
    def patterns(self):
        return self._patterns

    @attribute(dtype=str, access=AttrWriteType.READ)
    def settings(self) -> str:  # what the Merger's chain-settings client reads from a Stitcher
        return json.dumps({"poni_path": self.Poni, "mask_path": "", "bins": 8, "unit": "2th_deg"})

    @command(dtype_in=str)
    def PushScan(self, text: str) -> None:
        self._scan_info = text
        self.push_change_event("scanInfo", text)

    @command(dtype_in=str)
    def PushBatch(self, scan: str) -> None:
        """A batch of frames 1-2 (of 2) of ``scan``, built in-process: the checks a real Integrator's
        messages pass are skipped, as a hostile sender would skip them."""
        settings = IntegrationSettings(self.Poni, bins=8)
        batch = PatternBatch(
            f"{scan}:0:1", scan, "lambda", "hostile", 0, "fp", np.array([1, 2]), np.arange(2),
            np.ones((2, 8), np.float32), np.arange(8.0), settings=settings.to_dict(), total_frames=2,
        )  # fmt: skip
        self._patterns = batch.encode()
        self.push_change_event("patterns", *self._patterns)


def test_a_real_merger_refuses_hostile_names_pushed_through_tango(tmp_path, small_poni, ledger):
    from tango_servers.merger import Merger

    out, outside = tmp_path / "out" / "merged", tmp_path / "outside"
    outside.mkdir()
    devices = [
        {"class": HostileUpstream, "devices": [{"name": UPSTREAM, "properties": {"Poni": str(small_poni)}}]},
        {"class": Merger, "devices": [{"name": MERGER, "properties": {
            "StitcherDevice": UPSTREAM, "IntegratorDevices": [UPSTREAM], "OutputDirectory": str(out),
            "GapCheck": 600.0, "ScanTimeout": 600.0}}]},
    ]  # fmt: skip
    with MultiDeviceTestContext(devices, process=True, timeout=30) as ctx:
        merger, upstream = ctx.get_device(MERGER), ctx.get_device(UPSTREAM)
        merger.set_timeout_millis(10_000)
        wait_for(lambda: merger.upstreamConnected, 120, "the Merger's subscriptions to the upstream device")
        hostile_scan = {"type": "scan", "version": 1, "scan": "x", "detector": "lambda", "stem": "../x"}
        upstream.PushScan(json.dumps(hostile_scan))
        for scan in HOSTILE_SCANS:
            upstream.PushBatch(scan)
        ledger.fault("hostile scan/stem names pushed to a real Merger", 1 + len(HOSTILE_SCANS))
        wait_for(lambda: all(s in merger.status() for s in HOSTILE_SCANS), 60, "every hostile name named in Status")
        status = merger.status()
        assert "undecodable scan announcement" in status and "scan.stem: expected one file name" in status, status
        assert "'../x'" in status or "../x" in status
        assert status.count("undecodable batch") >= len(HOSTILE_SCANS), status
        upstream.PushBatch("good")  # still serving
        wait_for(lambda: merger.lastOutputFile != "", 60, "the good scan's file")
        assert merger.lastOutputFile == str(out / "good.nxs")
        assert merger.state() != tango.DevState.FAULT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside", "small.poni"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["merged"]
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == [".merger-closed", "good.nxs"]
    m = read_merged(out / "good.nxs")
    assert m["status"] == "complete" and m["frame_number"].tolist() == [1, 2]
    ledger.checked(2)
