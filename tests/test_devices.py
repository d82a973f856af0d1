"""Device tier: Stitcher → Integrator → Merger in one MultiDeviceTestContext (real Tango, own processes)."""

import numpy as np
import pytest
import tango
from tango.test_context import MultiDeviceTestContext

from pipeline_core.integrate import IntegrationSettings
from pipeline_core.nexus import read_merged
from pipeline_core.offline import integrate_source
from pipeline_core.sources import LambdaSource
from tango_servers.integrator import Integrator
from tango_servers.merger import Merger
from tango_servers.stitcher import Stitcher

from .conftest import wait_for, write_small_acquisition

STITCHER, INTEGRATOR, MERGER = "test/xrd/stitcher", "test/xrd/integrator1", "test/xrd/merger"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    from .conftest import SMALL_PONI

    (tmp / "small.poni").write_text(SMALL_PONI)
    devices = [
        {"class": Stitcher, "devices": [{"name": STITCHER, "properties": {"FramesPerItem": 2}}]},
        {
            "class": Integrator,
            "devices": [
                {
                    "name": INTEGRATOR,
                    "properties": {
                        "StitcherDevice": STITCHER,
                        "PoniPath": str(tmp / "small.poni"),
                        "Bins": 20,
                        "PollInterval": 0.3,
                    },
                }
            ],
        },
        {
            "class": Merger,
            "devices": [
                {
                    "name": MERGER,
                    "properties": {
                        "StitcherDevice": STITCHER,
                        "IntegratorDevices": [INTEGRATOR],
                        "OutputDirectory": str(tmp / "out"),
                    },
                }
            ],
        },
    ]
    with MultiDeviceTestContext(devices, process=True, timeout=30) as ctx:
        for name in (INTEGRATOR, MERGER):  # events pushed before a subscription is live are not received
            wait_for(lambda name=name: ctx.get_device(name).upstreamConnected, what=f"{name} connected upstream")
        yield tmp, ctx


def test_attributes_carry_units_labels_and_limits(chain):
    _, ctx = chain
    integrator = ctx.get_device(INTEGRATOR)
    bins = integrator.get_attribute_config("bins")
    assert (bins.unit, bins.label, bins.min_value, bins.max_value) == ("bins", "Bins", "1", "100000")
    assert integrator.get_attribute_config("throughput").unit == "frames/s"
    for name in (STITCHER, INTEGRATOR, MERGER):  # the operator-facing set, on every device
        dev = ctx.get_device(name)
        for attr, unit in (("latency", "s"), ("throughput", "frames/s"), ("framesProcessed", "frames")):
            assert dev.get_attribute_config(attr).unit == unit, (name, attr)
        for attr in ("unit", "outputDirectory", "currentScan", "lastOutputFile", "poniPath", "maskPath", "bins"):
            assert attr in dev.get_attribute_list(), (name, attr)
    assert "calibration" in integrator.get_attribute_config("poniPath").description


def test_bad_values_are_refused_and_the_old_value_stays(chain, tmp_path):
    tmp, ctx = chain
    integrator = ctx.get_device(INTEGRATOR)
    bad = tmp_path / "bad.poni"
    bad.write_text("garbage\n")
    with pytest.raises(tango.DevFailed, match="bad.poni is not a pyFAI calibration"):
        integrator.poniPath = str(bad)
    with pytest.raises(tango.DevFailed, match="unit 'furlong' is unknown"):
        integrator.unit = "furlong"
    with pytest.raises(tango.DevFailed, match="below the minimum"):
        integrator.bins = 0
    assert integrator.poniPath == str(tmp / "small.poni")
    assert integrator.unit == "2th_deg" and integrator.bins == 20


def test_reintegrate_runs_through_the_chain_and_never_overwrites(chain):
    tmp, ctx = chain
    acq = write_small_acquisition(tmp / "raw", n_parts=2, frames_per_part=3)
    stitcher, integrator, merger = (ctx.get_device(n) for n in (STITCHER, INTEGRATOR, MERGER))
    integrator.Start()
    stitcher.Start()
    assert "queued" in merger.Reintegrate(str(tmp / "raw"))  # forwarded to the Stitcher, returns at once
    wait_for(lambda: merger.framesProcessed >= 6, what="6 frames merged")
    merger.Stop()  # these small files do not say how many frames the acquisition has: close by hand
    wait_for(lambda: merger.lastOutputFile != "")
    first = merger.lastOutputFile
    assert first.endswith("out/scan_00001.nxs")
    live = read_merged(first)
    offline = integrate_source(
        LambdaSource.from_file(acq["files"][0]), IntegrationSettings(tmp / "small.poni", bins=20), tmp / "offline.nxs"
    )
    assert live["frame_number"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (live["data"] == read_merged(offline.output)["data"]).all()
    assert merger.bins == 20 and merger.poniPath == str(tmp / "small.poni")
    assert stitcher.frameShape.tolist() == [67, 32]
    assert stitcher.mask.shape == (67, 32) and stitcher.mask.sum() > 0

    integrator.bins = 10
    integrator.Reintegrate(str(acq["files"][0]))
    wait_for(lambda: merger.framesProcessed >= 12)
    merger.Stop()
    wait_for(lambda: merger.lastOutputFile != first)
    assert merger.lastOutputFile.endswith("scan_00001_v001.nxs")
    assert read_merged(merger.lastOutputFile)["data"].shape == (6, 10)
    assert read_merged(first)["data"].shape == (6, 20)  # the first result is untouched
    assert len(integrator.lastPattern) == 10 and len(integrator.radialAxis) == 10

    # the frame shape is known now: a mask drawn for another detector is refused, the old one stays
    np.save(tmp / "wrong.npy", np.zeros((5, 5), np.int8))
    with pytest.raises(tango.DevFailed, match=r"wrong.npy has shape \(5, 5\) but the frames are \(67, 32\)"):
        integrator.maskPath = str(tmp / "wrong.npy")
    assert integrator.maskPath == ""


def test_reintegrate_of_a_missing_path_is_a_clear_error(chain):
    _, ctx = chain
    with pytest.raises(tango.DevFailed, match="cannot reintegrate /no/such/dir: it does not exist"):
        ctx.get_device(STITCHER).Reintegrate("/no/such/dir")
    assert ctx.get_device(STITCHER).state() in (tango.DevState.ON, tango.DevState.RUNNING)
