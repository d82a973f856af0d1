"""Path escapes: `..`, symlinked files, symlinked folders and siblings that are symlinks, refused where
files are opened — through the stage API and through the real Stitcher/Integrator/Merger devices.

Outside the roots lies a real acquisition with distinct values: if any of it were read, frames would
be merged (or stitched); each test checks that none were."""

import pytest
import tango

from pipeline_core.errors import ConfigError, SourceError
from pipeline_core.formats.lambda_files import open_modules
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.messages import ClaimRequest, WorkItem
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.sources import read_part_range
from tango_servers.registration import DeviceSpec

from ..helpers import SMALL_PONI, real_servers, wait_for, write_small_acquisition


@pytest.fixture
def tree(tmp_path):
    """raw/ (the root) with a good acquisition, a folder of links out, a linked folder, and mixed siblings."""
    raw = tmp_path / "raw"
    good = write_small_acquisition(raw / "good", n_parts=1, record_total=True)
    outside = write_small_acquisition(tmp_path / "elsewhere", stem="secret_00001", n_parts=1, seed=7)
    (raw / "links").mkdir()
    for f in outside["files"]:
        (raw / "links" / f.name).symlink_to(f)
    (raw / "dirlink").symlink_to(tmp_path / "elsewhere")
    mixed = write_small_acquisition(raw / "mixed", stem="secret_00001", n_parts=1, seed=3)
    for f in mixed["files"][1:]:  # module 1 is real, its siblings point out of the root
        f.unlink()
        f.symlink_to(tmp_path / "elsewhere" / f.name)
    return tmp_path, raw, good, outside, mixed


def _stage(raw, errors):
    cfg = StitchConfig(frames_per_item=2, open_retry_delay_s=0.01, data_roots=(str(raw),), module_timeout_s=0.5)
    return StitchStage(cfg, lambda info: None, lambda n: None, errors.append)


def test_the_opening_functions_refuse_dotdot_and_links_out(tree, ledger):
    tmp, raw, good, outside, mixed = tree
    ledger.fault("path escape", 3 * 2)  # 3 sets of files, each given to 2 opening functions
    roots = (str(raw),)
    assert len(open_modules(good["files"], roots=roots)) == 3  # inside: opens (and closes below)
    for m in open_modules(good["files"], roots=roots):
        m.close()
    dotdot = [raw / ".." / "elsewhere" / f.name for f in outside["files"]]
    for files in (dotdot, [raw / "links" / f.name for f in outside["files"]], mixed["files"]):
        with pytest.raises(SourceError, match="outside the allowed root"):
            open_modules(files, roots=roots)
        with pytest.raises(ConfigError, match="resolves to .*elsewhere"):
            read_part_range(files, 0, 1, roots=roots)


def test_requeue_and_reintegrate_outside_the_roots_are_refused_at_once(tree, ledger):
    tmp, raw, good, outside, mixed = tree
    ledger.fault("path escape", 2 + 3)  # 2 requeues, 3 reintegrations
    errors: list[str] = []
    stage = _stage(raw, errors)
    try:
        for raw_file in (outside["files"][0], raw / ".." / "elsewhere" / outside["files"][0].name):
            with pytest.raises(ConfigError, match="raw_file of the requeue request .* outside the allowed root"):
                stage.requeue_frames("secret_00001", [1, 2], str(raw_file))
        with pytest.raises(ConfigError, match=r"module file of .*links .*secret_00001_m1_part00000.nxs resolves to"):
            stage.reintegrate(str(raw / "links"))
        with pytest.raises(ConfigError, match="acquisition to reintegrate .*dirlink resolves to"):
            stage.reintegrate(str(raw / "dirlink"))
        with pytest.raises(ConfigError, match="outside the allowed root"):
            stage.reintegrate(str(raw / "mixed"))
    finally:
        stage.stop()
    assert stage.counters.frames_received == 0 and stage.queue_depth == 0


def test_siblings_that_link_out_fail_the_part_without_being_read(tree, ledger):
    tmp, raw, good, outside, mixed = tree
    ledger.fault("path escape", 2)  # an announcement, a requeue
    errors: list[str] = []
    stage = _stage(raw, errors)
    try:
        stage.announce(str(mixed["files"][0]))  # the real module 1; its siblings are found by name
        wait_for(lambda: stage.queue_depth == 1, what="the part failed")
        (item,) = [stage.claim(ClaimRequest("int"))]
        # a Stitcher restarted, asked by a Merger for frames of a scan whose siblings link out: nothing made
        stage.requeue_frames("secret_00001#old", [1, 2], str(mixed["files"][0]))
        wait_for(lambda: stage.pending_requeues == 0)
    finally:
        stage.stop()
    assert item.error and "module file" in item.error and "outside the allowed root" in item.error
    assert item.frame_numbers == [1, 2, 3]  # from module 1, the one file inside the root
    assert stage.counters.frames_processed == 0 and stage.counters.frames_failed == 3
    assert stage.queue_depth == 0  # the requeue found no readable part: no work


def test_the_integrator_checks_the_files_of_a_work_item_itself(tree, small_poni, ledger):
    tmp, raw, good, outside, mixed = tree
    ledger.fault("path escape")  # one work item naming files out of the root
    batches, errors = [], []
    stage = IntegrateStage(
        "int", IntegrationSettings(small_poni, bins=10), None, batches.append, errors.append,
        data_roots=(str(raw),),
    )  # fmt: skip
    try:
        bad = WorkItem("x:0:0", "x", "lambda", 0, [str(raw / "links" / f.name) for f in outside["files"]], 0, 2, [1, 2])
        ok = WorkItem("g:0:0", "g", "lambda", 0, [str(f) for f in good["files"]], 0, 2, [1, 2])
        refused, done = stage.process(bad), stage.process(ok)
    finally:
        stage.stop()
    assert refused.frame_numbers.tolist() == [] and refused.failed[0].frame_numbers == [1, 2]
    assert "outside the allowed root" in refused.failed[0].reason
    assert done.frame_numbers.tolist() == [1, 2] and done.failed == []


STITCHER, INTEGRATOR, MERGER = "test/conf/stitcher", "test/conf/integrator", "test/conf/merger"


def test_the_real_devices_refuse_escapes_and_still_merge_what_is_inside(tree, ledger):
    tmp, raw, good, outside, mixed = tree
    ledger.fault("path escape", 2 + 3 + 1)  # 2 requeues, 3 reintegrations, 1 item outside the Integrator's roots
    (tmp / "small.poni").write_text(SMALL_PONI)
    stitcher_only = write_small_acquisition(tmp / "stitcher_only", stem="wide_00001", n_parts=1, record_total=True)
    specs = [
        DeviceSpec(
            "XrdStitcher/conf",
            "Stitcher",
            STITCHER,
            {"FramesPerItem": ["2"], "DataRoots": [str(raw), str(tmp / "stitcher_only")]},
        ),
        DeviceSpec(
            "XrdIntegrator/conf",
            "Integrator",
            INTEGRATOR,
            {
                "StitcherDevice": [STITCHER],
                "PoniPath": [str(tmp / "small.poni")],
                "Bins": ["10"],
                "PollInterval": ["0.3"],
                "DataRoots": [str(raw)],  # narrower than the Stitcher's: it checks for itself
            },
        ),
        DeviceSpec(
            "XrdMerger/conf",
            "Merger",
            MERGER,
            {"StitcherDevice": [STITCHER], "IntegratorDevices": [INTEGRATOR], "OutputDirectory": [str(tmp / "out")]},
        ),
    ]
    with real_servers(tmp, specs) as host:
        stitcher, integrator, merger = (
            tango.DeviceProxy(f"tango://{host}/{n}") for n in (STITCHER, INTEGRATOR, MERGER)
        )
        request = '{"type":"requeue","version":1,"scan":"secret_00001","frames":[1],"raw_file":"%s"}'
        for raw_file in (outside["files"][0], f"{raw}/../elsewhere/{outside['files'][0].name}"):
            with pytest.raises(tango.DevFailed, match="outside the allowed root") as info:
                stitcher.RequeueFrames(request % raw_file)
            assert info.value.args[0].reason == "XRD_InvalidValue"
        for folder in ("links", "dirlink", "mixed"):
            with pytest.raises(tango.DevFailed, match="outside the allowed root"):
                stitcher.Reintegrate(str(raw / folder))
        assert stitcher.itemsRequeued == 0 and stitcher.framesReceived == 0

        stitcher.Reintegrate(str(stitcher_only["files"][0]))  # inside the Stitcher's roots, not the Integrator's
        wait_for(lambda: integrator.framesFailed == 3 and merger.framesReceived == 3, what="the refusal merged")
        assert integrator.framesProcessed == 0 and merger.framesProcessed == 0
        assert "outside the allowed root" in integrator.status()
        stitcher.Reintegrate(str(raw / "good"))
        wait_for(lambda: merger.lastOutputFile.endswith("scan_00001.nxs"), what="the good scan merged")
        good_file = read_merged(merger.lastOutputFile)
        assert stitcher.state() in (tango.DevState.ON, tango.DevState.RUNNING, tango.DevState.ALARM)
    assert good_file["frame_number"].tolist() == [1, 2, 3] and good_file["status"] == "complete"
    ledger.checked(len(good_file["frame_number"]))
