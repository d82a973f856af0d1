"""End to end: the embedded Tango database, real server processes, the simulator writing live."""

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from pipeline_core.formats.nexus import read_merged
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource
from pipeline_core.simulate import write_calibration
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.launcher import start_servers, stop_servers
from tango_servers.registration import register

from .helpers import dioptas_stitch, wait_for


def _assert_rows_equal_pyfai(merged, first_raw, poni, mask_file, bins, frames):
    """Live rows against pyFAI ``integrate1d`` on frames read with h5py and stitched by the Dioptas
    rule in the test, masked with gaps + the files' pixel_mask + the user's mask (none of it ours)."""
    import fabio
    import h5py
    import pyFAI

    per_module, offsets, flags, numbers = [], [], [], None
    for k in (1, 2, 3):
        with h5py.File(str(first_raw).replace("_m1_", f"_m{k}_"), "r") as h5:
            det = h5["entry/instrument/detector"]
            per_module.append(det["data"][list(frames)])
            offsets.append(tuple(det["translation/distance"][:2]))
            flags.append(det["pixel_mask"][()].reshape(det["data"].shape[1:]) != 0)
            numbers = det["sequence_number"][list(frames)] if numbers is None else numbers
    gaps = dioptas_stitch([np.ones_like(f, np.uint8) for f in flags], offsets) == 0
    mask = gaps | dioptas_stitch(flags, offsets) | (fabio.open(str(mask_file)).data != 0)
    ai = pyFAI.load(str(poni))
    rows = {int(n): i for i, n in enumerate(merged["frame_number"])}
    for j, number in enumerate(numbers):
        frame = dioptas_stitch([m[j] for m in per_module], offsets)
        ref = ai.integrate1d(frame, bins, unit="2th_deg", method=("bbox", "csr", "cython"), mask=mask,
                             polarization_factor=0.99, correctSolidAngle=True)
        row = merged["data"][rows[int(number)]]
        assert np.max(np.abs(row - ref.intensity)) <= 1e-5 * np.max(ref.intensity), f"frame {number}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    servers = []
    try:
        specs, integrators = layout_for(tmp, integrators=2)
        specs = [
            s
            if s.klass != "Stitcher"
            else s.__class__(s.server, s.klass, s.name, {**s.properties, "FramesPerItem": ["4"]})
            for s in specs
        ]
        host, port = db.tango_host.split(":")
        assert len(register(specs, tango.Database(host, int(port)))) == 5
        assert register(specs, tango.Database(host, int(port))) == []  # idempotent
        servers = start_servers(specs, db.tango_host, tmp / "logs")
        yield tmp, db.tango_host, integrators
    finally:
        stop_servers(servers)
        db.stop()
    assert all(not s.alive() for s in servers)


def test_live_scan_with_two_integrators_equals_offline_and_reintegration_keeps_it(pipeline):
    tmp, host, integrator_names = pipeline

    def proxy(name):
        return tango.DeviceProxy(f"tango://{host}/{name}")

    poni, mask = write_calibration(tmp / "cal")
    integrators = [proxy(n) for n in integrator_names]
    merger, stitcher, sim = proxy(MERGER), proxy(STITCHER), proxy(SIMULATOR)
    for dev in integrators:
        dev.poniPath, dev.maskPath, dev.bins = str(poni), str(mask), 1000
        dev.Start()
    stitcher.Start()
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = 40, 20, 200.0
    stem = sim.Start()
    wait_for(lambda: merger.lastOutputFile != "", what=f"the merged file of {stem}")
    first = Path(merger.lastOutputFile)
    assert first.name == f"{stem}.nxs"
    live = read_merged(first)

    # every frame exactly once, shared by both Integrators
    assert live["frame_number"].tolist() == list(range(1, 41))
    processed = [dev.framesProcessed for dev in integrators]
    assert sum(processed) == 40 and all(n > 0 for n in processed), processed
    assert merger.framesProcessed == 40 and merger.framesFailed == 0
    assert merger.state() == tango.DevState.ON, merger.status()

    # row for row what `xrd-pipeline integrate` gives on the same files
    raw = sorted((tmp / "raw").glob(f"{stem}_m1_part*.nxs"))
    offline = integrate_source(
        LambdaSource.from_file(raw[0]),
        IntegrationSettings(poni, bins=1000, mask_path=mask),
        tmp / "offline" / f"{stem}.nxs",
    )
    ref = read_merged(offline.output)
    np.testing.assert_allclose(live["data"], ref["data"], rtol=1e-6)
    np.testing.assert_array_equal(live["pos_map"], ref["pos_map"])
    assert live["files"] == ref["files"] and live["status"] == "complete"
    with h5py.File(first) as h5:  # the engine that integrated the rows, as the offline file records it too
        proc = h5["processed/process"]
        assert proc["engine"][()].decode() == "csr" and "sparse" in proc["engine_note"][()].decode()
    with h5py.File(offline.output) as h5:
        assert h5["processed/process/engine"][()].decode() == "csr"
    assert sorted(live["input_files"]) == sorted(ref["input_files"]) and len(live["input_files"]) == 6
    _assert_rows_equal_pyfai(live, raw[0], poni, mask, bins=1000, frames=(0, 7, 19))

    # reintegration with new bins: a second file, the first untouched
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    for dev in integrators:
        dev.bins = 300
    merger.Reintegrate(str(raw[1]))
    wait_for(lambda: merger.lastOutputFile != str(first), what="the reintegrated file")
    second = Path(merger.lastOutputFile)
    assert second.name == f"{stem}_v001.nxs"
    assert read_merged(second)["data"].shape == (40, 300)
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
