"""The Merger never creates a file outside its OutputDirectory (issue 17, item 3).

A stem comes from the detector (``SaveFileName``) or a client's message: ``../../outside/evil3``
wrote ``outside/evil3.nxs``. Stems and scan names are refused where messages are built and decoded,
the merge stage refuses them again, and no file of an open scan is created through a symbolic link
planted in the output folder."""

import json

import numpy as np
import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import MessageError, PatternBatch, RequeueRequest, ScanInfo, WorkItem
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import wait_for

BAD_NAMES = ["../../outside/evil3", "sub/evil", "..", ".", "", "evil\0name"]


def _batch(settings, scan="scan", numbers=(1, 2), total=2):
    n = len(numbers)
    return PatternBatch(
        f"{scan}:0:0", scan, "lambda", "int0", 0, "fp", np.array(numbers), np.arange(n),
        np.ones((n, 4), np.float32), np.arange(4.0), settings=settings.to_dict(), total_frames=total,
    )  # fmt: skip


@pytest.mark.parametrize("name", BAD_NAMES)
def test_messages_refuse_a_stem_or_scan_that_is_not_one_file_name(name, ledger):
    ledger.fault("hostile scan/stem name", 2 * 2 + 3)  # stem and scan, decoded and built; requeue, work, batch
    scan = {"type": "scan", "version": 1, "scan": "ok", "detector": "lambda", "stem": "ok"}
    for field in ("stem", "scan"):
        with pytest.raises(MessageError, match=rf"scan\.{field}: expected one file name"):
            ScanInfo.from_json(json.dumps({**scan, field: name}))
        with pytest.raises(MessageError, match=rf"scan\.{field}: expected one file name"):
            ScanInfo(**{"scan": "ok", "detector": "lambda", "stem": "ok", field: name})  # built, as the Stitcher does
    with pytest.raises(MessageError, match="requeue.scan: expected one file name"):
        RequeueRequest.from_json(json.dumps({"type": "requeue", "version": 1, "scan": name, "frames": [1]}))
    item = {"type": "work", "version": 1, "item_id": "i", "scan": name, "detector": "d", "part": 0,
            "module_files": ["/raw/x_m1.nxs"], "start": 0, "stop": 1, "frame_numbers": [1]}  # fmt: skip
    with pytest.raises(MessageError, match="work.scan: expected one file name"):
        WorkItem.from_json(json.dumps(item))
    fmt, payload = _batch(IntegrationSettings("/cal/x.poni", bins=4), scan=name).encode()
    with pytest.raises(MessageError, match="pattern batch scan: expected one file name"):
        PatternBatch.decode(fmt, payload)


def test_a_good_name_with_a_reintegration_suffix_passes():
    info = ScanInfo.from_json(json.dumps({"type": "scan", "version": 1, "scan": "ramp_00001#r2", "detector": "l",
                                          "stem": "ramp_00001"}))  # fmt: skip
    assert (info.scan, info.stem) == ("ramp_00001#r2", "ramp_00001")


def test_the_merge_stage_writes_nothing_outside_its_output_directory(tmp_path, small_poni, ledger):
    ledger.fault("hostile scan/stem name", 2)
    out, outside = tmp_path / "out" / "merged", tmp_path / "outside"
    outside.mkdir()
    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    stage = MergeStage(out, closed.append, errors.append)
    try:
        # batches built in-process skip the message checks: the stage refuses them itself
        for scan in ("../../outside/evil3", "ok#../../../outside/evil4"):
            stage.add_batch(_batch(settings, scan=scan))
        stage.add_batch(_batch(settings, scan="good"))
        wait_for(lambda: len(closed) == 1 and len(errors) >= 2, timeout_s=20)
    finally:
        stage.stop()
    assert list(outside.iterdir()) == [] and not (tmp_path / "evil3.nxs").exists()
    assert any("'../../outside/evil3' contains '/'" in e for e in errors), errors
    assert any("scan name 'ok#../../../outside/evil4' contains '/'" in e for e in errors), errors
    assert closed[0].path == out / "good.nxs" and read_merged(closed[0].path)["status"] == "complete"
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == [".merger-closed", "good.nxs"], leftovers  # no empty .part left by a refusal


@pytest.mark.parametrize("planted", ["scan.nxs", "scan.nxs.part", "scan.nxs.rowlog", "scan.nxs.tmp", ".merger-closed"])
def test_a_symlink_planted_in_the_output_folder_is_never_written_through(tmp_path, small_poni, planted, ledger):
    ledger.fault("symlink planted in the output folder")
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("precious")
    (out / planted).symlink_to(outside if planted == ".merger-closed" else victim)
    settings = IntegrationSettings(small_poni, bins=4)
    closed, errors = [], []
    stage = MergeStage(out, closed.append, errors.append)
    try:
        stage.add_batch(_batch(settings))
        wait_for(lambda: stage.counters.frames_received == 2 and stage.queue_depth == 0, timeout_s=20)
        wait_for(lambda: closed or errors, timeout_s=20)
    finally:
        stage.stop()
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    if planted in ("scan.nxs.rowlog", "scan.nxs.tmp"):  # the scan's own names: refused, said, nothing left
        assert closed == [] and any("cannot create" in e and planted in e for e in errors), errors
        assert sorted(p.name for p in out.iterdir()) == [planted]
    else:  # a taken name: the next version is used inside the folder
        assert closed[0].path.parent == out and read_merged(closed[0].path)["frame_number"].tolist() == [1, 2]


def test_the_tango_merger_checks_a_mask_path_against_the_roots_before_opening_it(tmp_path, small_poni, ledger):
    """The Merger has no roots and sees no frames; it used to open a written maskPath itself before
    forwarding it, answering '/etc/shadow cannot be read' or '... does not exist': an existence
    oracle for any path. The Stitcher's CalibrationRoots now decide first."""
    import tango
    from tango.test_context import MultiDeviceTestContext

    from tango_servers.merger import Merger
    from tango_servers.stitcher import Stitcher

    stitcher_name, merger_name = "test/conf/stitcher", "test/conf/merger"
    cal = small_poni.parent
    devices = [
        {"class": Stitcher, "devices": [{"name": stitcher_name, "properties": {
            "Trigger": "file-attribute", "CalibrationRoots": [str(cal)], "AutoStart": False}}]},
        {"class": Merger, "devices": [{"name": merger_name, "properties": {
            "StitcherDevice": stitcher_name, "OutputDirectory": str(tmp_path / "out"), "AutoStart": False}}]},
    ]  # fmt: skip
    ledger.fault("path escape", 3)  # three mask paths outside the roots
    with MultiDeviceTestContext(devices, process=True, timeout=30) as ctx:
        merger = ctx.get_device(merger_name)
        merger.set_timeout_millis(10_000)
        answers = []
        for path in ("/etc/shadow", "/etc/no-such-file-here.npy", str(tmp_path.parent / "missing.npy")):
            with pytest.raises(tango.DevFailed) as info:
                merger.maskPath = path
            answers.append(info.value.args[0].desc)
        with pytest.raises(tango.DevFailed, match=r"missing\.npy does not exist"):
            merger.maskPath = str(cal / "missing.npy")  # inside the roots: may be told
        assert merger.maskPath == ""
    for path, answer in zip(("/etc/shadow", "/etc/no-such-file-here.npy", "missing.npy"), answers, strict=True):
        assert "outside the allowed root" in answer and path in answer, answer
        assert "cannot be read" not in answer and "does not exist" not in answer, answer
