"""Issue 8: the chain has one set of integration settings, and it travels with the work.

Stage tier: the Stitcher stage stamps every item with its scan's settings, so Integrators with
other (or no) settings of their own integrate a scan alike, a change mid-scan never mixes settings in
one file, and Reintegrate takes the settings in force when it is called. Device tier (real server
processes of the demo layout): README's script as written — PONI and bins set on integrator1 only,
Reintegrate on the Merger — gives a complete file integrated by both Integrators, and every device
shows the same values after a write (or a refused write) on any one of them.
"""

from dataclasses import replace

import numpy as np
import pytest
import tango

from pipeline_core.errors import ConfigError
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.chain_settings import ChainSettings
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.work_source import InProcessWorkSource
from pipeline_core.messages import ClaimRequest, MessageError, PatternBatch, SettingsRequest, WorkItem
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import SMALL_PONI, wait_for, write_small_acquisition

# -- stage tier --------------------------------------------------------------------------------------


class Chain:
    """Stitch (holding the chain's settings) → integrators with settings of their own → merge."""

    def __init__(self, tmp_path, chain_settings: dict, own: list[IntegrationSettings | None]):
        self.errors: list[str] = []
        self.closed = []
        self.merge = MergeStage(tmp_path / "out", self.closed.append, self.errors.append, scan_timeout_s=60)
        self.stitch = StitchStage(
            StitchConfig(frames_per_item=2, open_retry_delay_s=0.01),
            on_scan=self.merge.scan_started,
            on_work=lambda n: [s.wake() for s in self.integrators],
            on_error=self.errors.append,
            settings=ChainSettings(chain_settings),
        )
        self.integrators = [
            IntegrateStage(
                f"int{i}", s, InProcessWorkSource(self.stitch), self._batch, self.errors.append, poll_interval_s=0.1
            )
            for i, s in enumerate(own)
        ]

    def _batch(self, batch: PatternBatch):
        self.merge.add_batch(PatternBatch.decode(*batch.encode()))

    def start(self):
        for s in self.integrators:
            s.start()

    def stop(self):
        for s in self.integrators:
            s.stop()
        self.stitch.stop()
        self.merge.stop()


def test_integrators_with_other_or_no_settings_integrate_each_item_as_queued(tmp_path, small_poni):
    write_small_acquisition(tmp_path / "raw", n_parts=3, frames_per_part=4, record_total=True)
    other = tmp_path / "other.poni"
    other.write_text(SMALL_PONI.replace("Distance: 0.01", "Distance: 0.02"))
    chain = Chain(tmp_path, {"poni_path": str(small_poni), "bins": 12}, [IntegrationSettings(other, bins=40), None])
    try:
        chain.start()
        chain.stitch.reintegrate(str(tmp_path / "raw"))
        wait_for(lambda: len(chain.closed) == 1, what=f"the scan closed; errors: {chain.errors}")
    finally:
        chain.stop()
    m = read_merged(chain.closed[0].path)
    assert m["frame_number"].tolist() == list(range(1, 13)) and m["status"] == "complete", m["failed_reasons"]
    assert m["data"].shape == (12, 12)
    assert [s.counters.frames_processed > 0 for s in chain.integrators] == [True, True]
    assert chain.errors == []


def test_a_settings_change_mid_scan_never_mixes_settings_in_one_file(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=4, record_total=True)
    chain = Chain(tmp_path, {"poni_path": str(small_poni), "bins": 10}, [None, None])
    try:
        first_part, second_part = acq["files"][:3], acq["files"][3:]
        for f in first_part:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.queue_depth == 2, what="part 0 queued")
        chain.stitch.set_settings({"bins": 20})  # in force from the next scan: this one keeps 10 bins
        for f in second_part:
            chain.stitch.announce(str(f))
        wait_for(lambda: chain.stitch.queue_depth == 4, what="part 1 queued")
        items = [chain.stitch.claim(ClaimRequest("test")) for _ in range(4)]
        assert {i.settings["bins"] for i in items} == {10} and len({i.settings_hash for i in items}) == 1
        for item in items:  # put them back as they were: the integrators below take them
            chain.stitch.requeue_frames(item.scan, item.frame_numbers)
        chain.start()
        wait_for(lambda: len(chain.closed) == 1, what=f"the scan closed; errors: {chain.errors}")
        # a new scan (a reintegration) takes the settings in force when Reintegrate was called ...
        chain.stitch.reintegrate(str(tmp_path / "raw"))
        chain.stitch.set_settings({"bins": 30})  # ... not this later change
        wait_for(lambda: len(chain.closed) == 2, what=f"the reintegration closed; errors: {chain.errors}")
    finally:
        chain.stop()
    live, again = (read_merged(s.path) for s in chain.closed)
    assert live["frame_number"].tolist() == list(range(1, 9)) and live["status"] == "complete"
    assert live["data"].shape == (8, 10)
    assert again["frame_number"].tolist() == list(range(1, 9)) and again["data"].shape == (8, 20)
    assert chain.stitch.settings.shown()["bins"] == 30


def test_chain_settings_change_field_by_field_and_refuse_keeping_the_old_value(tmp_path, small_poni):
    chain = ChainSettings()
    chain.change({"bins": 50})  # before any PONI (a memorized attribute restored first, say)
    assert chain.current() is None and chain.shown() == {"poni_path": "", "mask_path": "", "bins": 50, "unit": ""}
    # an Integrator's initial values fill only what nobody gave, and only while there is no PONI
    chain.change({"poni_path": str(small_poni), "bins": 7, "unit": "q_nm^-1"}, initial=True)
    assert chain.shown() == {"poni_path": str(small_poni), "mask_path": "", "bins": 50, "unit": "q_nm^-1"}
    chain.change({"poni_path": "/elsewhere.poni", "bins": 3}, initial=True)
    assert chain.current().bins == 50
    bad = tmp_path / "bad.poni"
    bad.write_text("garbage\n")
    before = chain.shown()
    for changes, message in (
        ({"poni_path": str(bad)}, "bad.poni is not a pyFAI calibration"),
        ({"unit": "furlong"}, "unit 'furlong' is unknown"),
        ({"bins": 0}, "bins 0 is out of range"),
        ({"mask_path": str(tmp_path / "none.npy")}, "none.npy"),
    ):
        with pytest.raises(ConfigError, match=message):
            chain.change(changes)
        assert chain.shown() == before
    np.save(tmp_path / "small.npy", np.zeros((5, 5), np.int8))
    with pytest.raises(ConfigError, match=r"small.npy has shape \(5, 5\) but the frames are \(67, 32\)"):
        chain.change({"mask_path": str(tmp_path / "small.npy")}, frame_shape=(67, 32))
    assert chain.shown() == before


def test_an_item_whose_poni_changed_on_disk_since_it_was_queued_is_refused(tmp_path, small_poni):
    write_small_acquisition(tmp_path / "raw", n_parts=1, frames_per_part=2)
    errors: list[str] = []
    stitch = StitchStage(
        StitchConfig(),
        lambda i: None,
        lambda n: None,
        errors.append,
        settings=ChainSettings({"poni_path": str(small_poni)}),
    )
    batches: list[PatternBatch] = []
    integrator = IntegrateStage("int0", None, None, batches.append, errors.append)
    try:
        stitch.reintegrate(str(tmp_path / "raw"))
        wait_for(lambda: stitch.queue_depth == 1)
        item = stitch.claim(ClaimRequest("int0"))
        small_poni.write_text(SMALL_PONI.replace("Distance: 0.01", "Distance: 0.011"))  # re-calibrated in place
        batch = integrator.process(item)
    finally:
        integrator.stop()
        stitch.stop()
    assert len(batch.frame_numbers) == 0 and batch.failed[0].frame_numbers == [1, 2]
    assert "changed since its scan was queued" in batch.failed[0].reason


def test_work_item_and_settings_request_decoding_stays_strict(small_poni):
    settings = IntegrationSettings(small_poni).to_dict()
    item = WorkItem("s:0:0", "s", "lambda", 0, ["/a_m1.nxs"], 0, 1, [1], settings=settings, settings_hash="ab12")
    assert WorkItem.from_json(item.to_json()) == item
    for bad, message in (
        (replace(item, settings={**settings, "gain": 2}), r"work.settings: expected only the settings"),
        (replace(item, settings={"poni_path": "/a.poni"}), r"work.settings: missing bins"),
        (replace(item, settings={**settings, "bins": "many"}), r"work.settings.bins: expected an integer"),
        (replace(item, settings_hash=""), r"work.settings_hash: expected a fingerprint exactly when"),
    ):
        with pytest.raises(MessageError, match=message):
            WorkItem.from_json(bad.to_json())
    assert SettingsRequest.from_json(SettingsRequest(bins=5, mask_path="").to_json()).changes() == {
        "bins": 5,
        "mask_path": "",
    }
    with pytest.raises(MessageError, match="expected at least one of"):
        SettingsRequest.from_json('{"type":"settings","version":1}')
    with pytest.raises(MessageError, match="settings.bins: expected an integer"):
        SettingsRequest.from_json('{"type":"settings","version":1,"bins":1.5}')


# -- device tier: README's script, for real ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tango_servers.demo import layout_for
    from tango_servers.embedded_db import EmbeddedDatabase, free_port
    from tango_servers.launcher import start_servers, stop_servers
    from tango_servers.registration import register

    tmp = tmp_path_factory.mktemp("chain-settings")
    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    servers = []
    try:
        specs, names = layout_for(tmp, integrators=2)
        tuned = {"Stitcher": {"FramesPerItem": ["2"]}, "Integrator": {"PollInterval": ["0.3"]}}
        specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        servers = start_servers(specs, db.tango_host, tmp / "logs")
        yield tmp, db.tango_host, names, servers
    finally:
        stop_servers(servers)
        db.stop()


SETTING_ATTRS = ("poniPath", "maskPath", "bins", "unit")


def _shown(devices) -> list[tuple]:
    return [tuple(d.read_attribute(a).value for a in SETTING_ATTRS) for d in devices]


def test_readme_script_two_integrators_settings_on_one_reintegrate_is_complete(demo):
    from tango_servers.demo import MERGER, STITCHER

    tmp, host, names, servers = demo
    (tmp / "cal").mkdir()
    poni = tmp / "cal" / "small.poni"
    poni.write_text(SMALL_PONI)
    write_small_acquisition(tmp / "raw", stem="ramp_00042", n_parts=4, frames_per_part=10, record_total=True)

    # README "From a script", with local paths
    integrator = tango.DeviceProxy(f"tango://{host}/p02/xrd/integrator1")
    integrator.poniPath = str(poni)
    integrator.bins = 40
    merger = tango.DeviceProxy(f"tango://{host}/p02/xrd/merger")
    before = merger.lastOutputFile
    print(merger.Reintegrate(str(tmp / "raw" / "ramp_00042_m1_part00000.nxs")))
    wait_for(lambda: merger.lastOutputFile != before, timeout_s=120, what=f"the merged file:\n{merger.status()}")
    print(merger.state(), merger.status(), merger.lastOutputFile)

    m = read_merged(merger.lastOutputFile)
    assert m["frame_number"].tolist() == list(range(1, 41)), (m["failed_frames"], m["failed_reasons"])
    assert m["status"] == "complete" and m["data"].shape == (40, 40)
    integrators = [tango.DeviceProxy(f"tango://{host}/{n}") for n in names]
    processed = [d.framesProcessed for d in integrators]
    assert sum(processed) == 40 and all(n > 0 for n in processed), processed
    assert all(d.framesFailed == 0 for d in integrators) and merger.framesFailed == 0
    stitcher = tango.DeviceProxy(f"tango://{host}/{STITCHER}")
    everyone = [stitcher, *integrators, merger]
    assert set(_shown(everyone)) == {(str(poni), "", 40, "2th_deg")}
    assert merger.name() == MERGER


def test_every_device_shows_the_chain_values_after_a_write_on_any_one(demo):
    from tango_servers.demo import MERGER, STITCHER

    tmp, host, names, _ = demo
    stitcher, merger = (tango.DeviceProxy(f"tango://{host}/{n}") for n in (STITCHER, MERGER))
    integrators = [tango.DeviceProxy(f"tango://{host}/{n}") for n in names]
    everyone = [stitcher, *integrators, merger]
    poni = str(tmp / "cal" / "small.poni")
    merger.bins = 31
    assert set(_shown(everyone)) == {(poni, "", 31, "2th_deg")}
    integrators[1].unit = "q_nm^-1"
    assert set(_shown(everyone)) == {(poni, "", 31, "q_nm^-1")}
    stitcher.unit = "2th_deg"
    assert set(_shown(everyone)) == {(poni, "", 31, "2th_deg")}


def test_a_refused_value_on_the_merger_or_an_integrator_leaves_the_chain_unchanged(demo):
    from tango_servers.demo import MERGER, STITCHER

    tmp, host, names, _ = demo
    stitcher, merger = (tango.DeviceProxy(f"tango://{host}/{n}") for n in (STITCHER, MERGER))
    integrators = [tango.DeviceProxy(f"tango://{host}/{n}") for n in names]
    everyone = [stitcher, *integrators, merger]
    before = _shown(everyone)
    bad = tmp / "cal" / "bad.poni"
    bad.write_text("garbage\n")
    np.save(tmp / "cal" / "wrong.npy", np.zeros((5, 5), np.int8))
    for device, attr, value, message in (
        (merger, "poniPath", str(bad), "bad.poni is not a pyFAI calibration"),
        (integrators[1], "unit", "furlong", "unit 'furlong' is unknown"),
        # the Merger never sees frames: the Stitcher, which does, refuses a mask that does not fit them
        (merger, "maskPath", str(tmp / "cal" / "wrong.npy"), r"wrong.npy has shape \(5, 5\) but the frames are"),
    ):
        with pytest.raises(tango.DevFailed, match=message) as info:
            device.write_attribute(attr, value)
        assert info.value.args[0].reason == "XRD_InvalidValue"
        assert _shown(everyone) == before


def test_a_restarted_stitcher_restores_the_settings_forwarded_to_it(demo):
    from tango_servers.demo import STITCHER

    tmp, host, names, servers = demo
    integrator = tango.DeviceProxy(f"tango://{host}/{names[0]}")
    integrator.bins = 77  # forwarded: memorized by the Stitcher, not by integrator1
    server = next(s for s in servers if s.server.startswith("XrdStitcher"))
    server.stop()
    server.start()
    server.wait_ready(60)
    stitcher = tango.DeviceProxy(f"tango://{host}/{STITCHER}")
    # its first reads wait for the settings it restores after Init (a PONI and a mask parsed): more
    # than Tango's 3 s client time-out on a loaded machine (seen with the suite on 3 workers)
    stitcher.set_timeout_millis(30_000)
    assert (stitcher.poniPath, stitcher.bins) == (str(tmp / "cal" / "small.poni"), 77)
    wait_for(lambda: _readable(integrator), timeout_s=30, what="integrator1 to read the chain again")
    assert integrator.bins == 77


def _readable(device) -> bool:
    try:
        device.read_attribute("bins")
        return True
    except tango.DevFailed:
        return False
