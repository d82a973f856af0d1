"""Issue 9: the Sardana macros in a real Sardana (PyPI ``sardana``: Pool + MacroServer + Door in the
embedded database, ``MacroPath`` = ``sardana_macros``), run through the Door against a live chain.

One chain and one Sardana serve the module; the tests run in file order: settings first (the chain
starts without a PONI), then a refused change, a reintegration, and the status of what it did.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tango

from pipeline_core.formats.nexus import read_merged

from .helpers import SMALL_PONI, real_servers, wait_for, write_small_acquisition
from .sardana_helpers import Door, SardanaLayout, sardana_servers

SETTINGS = ("poniPath", "maskPath", "bins", "unit")


@pytest.fixture(scope="module")
def sardana(tmp_path_factory):
    """A live chain of the demo layout (2 Integrators) and a Sardana whose Door runs our macros."""
    from tango_servers.demo import layout_for

    tmp = tmp_path_factory.mktemp("sardana")
    specs, names = layout_for(tmp, integrators=2)
    tuned = {"Stitcher": {"FramesPerItem": ["2"]}, "Integrator": {"PollInterval": ["0.3"]}}
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    layout = SardanaLayout()
    with real_servers(tmp, specs) as tango_host:
        from tango_servers.registration import register

        host, port = tango_host.split(":")
        register(layout.specs(tmp), tango.Database(host, int(port)))
        with sardana_servers(layout, tango_host, tmp / "logs") as processes:
            door = Door(tango_host, layout.door)
            try:
                yield tmp, tango_host, names, door
            finally:
                door.close()
        assert [p.process.poll() is not None for p in processes] == [True, True], "Sardana left running"


def _devices(host: str, integrators: list[str]) -> dict[str, tango.DeviceProxy]:
    from tango_servers.demo import MERGER, STITCHER

    return {n: tango.DeviceProxy(f"tango://{host}/{n}") for n in (STITCHER, *integrators, MERGER)}


def _shown(devices: dict) -> dict[str, tuple]:
    return {n: tuple(d.read_attribute(a).value for a in SETTINGS) for n, d in devices.items()}


def test_xrd_settings_sets_the_chain_and_optional_arguments_keep_the_values_in_force(sardana):
    tmp, host, integrators, door = sardana
    devices = _devices(host, integrators)
    (tmp / "cal").mkdir()
    poni = tmp / "cal" / "small.poni"
    poni.write_text(SMALL_PONI)
    mask = tmp / "cal" / "mask.npy"
    np.save(mask, np.zeros((67, 32), np.int8))

    run = door.run("xrd_settings", str(poni), "40")
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    assert set(_shown(devices).values()) == {(str(poni), "", 40, "2th_deg")}
    for name in devices:  # the macro shows what every device shows
        assert f"{name}: poni {poni}, mask (none), 40 bins, unit 2th_deg" in run.output, run.text

    run = door.run("xrd_settings", str(poni), "41", str(mask), "q_nm^-1")
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    assert set(_shown(devices).values()) == {(str(poni), str(mask), 41, "q_nm^-1")}
    run = door.run("xrd_settings", str(poni), "42")  # mask and unit not given: unchanged (issue 9: were cleared)
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    assert set(_shown(devices).values()) == {(str(poni), str(mask), 42, "q_nm^-1")}
    run = door.run("xrd_settings", str(poni), "40", "-", "2th_deg")  # - = no user mask
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    assert set(_shown(devices).values()) == {(str(poni), "", 40, "2th_deg")}, run.report


def test_a_refused_value_changes_nothing_on_any_device_and_the_macro_says_why(sardana):
    tmp, host, integrators, door = sardana
    devices = _devices(host, integrators)
    before = _shown(devices)
    other = tmp / "cal" / "other.poni"
    other.write_text(SMALL_PONI.replace("Distance: 0.01", "Distance: 0.02"))
    bad = tmp / "cal" / "bad.poni"
    bad.write_text("garbage\n")
    for args, reason in (
        ((str(other), "0"), "settings.bins"),  # a good PONI with a bad bins: neither is taken
        ((str(bad), "60"), "bad.poni is not a pyFAI calibration"),
        ((str(other), "60", "-", "furlong"), "unit 'furlong' is unknown"),
    ):
        run = door.run("xrd_settings", *args)
        assert run.state != tango.DevState.ON, run.report
        errors = "\n".join(run.error)
        assert reason in errors and "nothing was changed" in errors, errors
        assert "XRD_InvalidValue" in errors, errors
        assert _shown(devices) == before, args
        for name, values in before.items():
            assert f"{name}: poni {values[0]}, mask (none), {values[2]} bins, unit {values[3]}" in run.output


def test_xrd_reintegrate_produces_a_new_merged_file(sardana):
    from tango_servers.demo import MERGER

    tmp, host, integrators, door = sardana
    write_small_acquisition(tmp / "raw", stem="ramp_00042", n_parts=3, frames_per_part=4, record_total=True)
    merger = _devices(host, integrators)[MERGER]
    first = tmp / "raw" / "ramp_00042_m1_part00000.nxs"

    run = door.run("xrd_reintegrate", str(first), "True", "120", timeout_s=150)
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    assert run.result == [merger.lastOutputFile] and f"merged file: {merger.lastOutputFile}" in run.output
    m = read_merged(run.result[0])
    assert m["frame_number"].tolist() == list(range(1, 13)) and m["status"] == "complete", m["failed_reasons"]
    assert m["data"].shape == (12, 40)

    before = merger.lastOutputFile
    run = door.run("xrd_reintegrate", str(tmp / "raw"))  # no wait: what the Stitcher queued
    assert run.state == tango.DevState.ON and run.result and run.result[0].startswith("queued "), run.report
    wait_for(lambda: merger.lastOutputFile != before, timeout_s=120, what=f"the second file:\n{merger.status()}")
    assert merger.lastOutputFile != before and read_merged(merger.lastOutputFile)["status"] == "complete"


def test_xrd_status_lists_every_device_with_state_and_counts(sardana):
    tmp, host, integrators, door = sardana
    devices = _devices(host, integrators)
    # the line holds State as the macro read it: wait until the previous test's work has settled (RUNNING
    # lasts a moment after the last batch, and until the Integrators' next claims acknowledge their items)
    busy = (tango.DevState.RUNNING, tango.DevState.MOVING)
    wait_for(
        lambda: all(d.state() not in busy for d in devices.values()),
        timeout_s=60,
        what=lambda: "every device idle: " + ", ".join(f"{n} {d.state()}" for n, d in devices.items()),
    )
    run = door.run("xrd_status")
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    for name, dev in devices.items():
        line = next((s for s in run.output if s.startswith(f"{name}: ")), None)
        assert line is not None, run.text
        counts = tuple(dev.read_attribute(a).value for a in ("framesReceived", "framesProcessed", "framesFailed"))
        received, processed, failed = counts
        assert line.startswith(f"{name}: {dev.state()}  received {received}  processed {processed}  failed {failed}")
        assert re.search(r"  \d+\.\d frames/s$", line), f"throughput not shown as a number: {line}"
        assert f"    {dev.status().splitlines()[0]}" in run.output
    assert devices["p02/xrd/merger"].framesProcessed == 24  # both reintegrations merged
    assert run.output[-1] == f"last merged file: {devices['p02/xrd/merger'].lastOutputFile}"


def test_the_environment_points_the_macros_at_other_devices(sardana):
    tmp, host, integrators, door = sardana
    try:
        for args in (("XrdIntegrators", integrators[1]), ("XrdIntegrators", *reversed(integrators))):
            assert door.run("senv", *args).error == []
            run = door.run("xrd_status")
            listed = [s.split(":")[0] for s in run.output if s.startswith("p02/xrd/integrator")]
            assert listed == list(args[1:]), run.report
    finally:
        door.run("usenv", "XrdIntegrators")
    run = door.run("xrd_status")
    assert [s.split(":")[0] for s in run.output if s.startswith("p02/xrd/integrator")] == integrators, run.report


def test_xrd_reintegrate_with_a_job_backend_waits_for_the_job_and_returns_its_file(sardana):
    """ReintegrationBackend=local: the macro follows the job the Stitcher submitted (not the Merger)
    and returns the job's merged file, equal row for row to the chain's reintegration of the same frames."""
    from tango_servers.demo import MERGER, STITCHER

    tmp, host, integrators, door = sardana
    devices = _devices(host, integrators)
    stitcher, chain_file = devices[STITCHER], devices[MERGER].lastOutputFile  # the chain's: ramp_00042, 40 bins
    settings = _shown(devices)[STITCHER]
    db = tango.Database(*host.split(":"))
    db.put_device_property(STITCHER, {"ReintegrationBackend": ["local"]})
    stitcher.Init()  # as an operator does in Jive after changing a property
    try:
        wait_for(lambda: stitcher.state() == tango.DevState.ON, 30, f"the Stitcher after Init: {stitcher.status()}")
        assert _shown(devices)[STITCHER] == settings, "Init kept the chain's (memorized) settings"
        run = door.run("xrd_reintegrate", str(tmp / "raw"), "True", "120", timeout_s=150)
        assert (run.state, run.error) == (tango.DevState.ON, []), run.report
        (job,) = json.loads(stitcher.jobs)
        assert job["state"] == "complete" and run.result == [job["output"]], (job, run.report)
        assert run.output[0] == job["id"], run.text  # what Reintegrate answered: the job's id
        assert (
            f"job {job['id']}: complete, 12/12 frames" in run.output and f"merged file: {job['output']}" in run.output
        )
        job_rows, chain_rows = read_merged(job["output"]), read_merged(chain_file)
        assert job_rows["status"] == "complete" and job_rows["frame_number"].tolist() == list(range(1, 13))
        assert Path(job["output"]).name != Path(chain_file).name  # a new file: the chain's result stays
        np.testing.assert_allclose(job_rows["data"], chain_rows["data"], rtol=1e-6)
        assert devices[MERGER].lastOutputFile == chain_file  # the job did not go through the chain

        run = door.run("xrd_reintegrate", str(tmp / "raw" / "nothing_here.nxs"), "True", "30")
        assert run.state != tango.DevState.ON and "XRD_InvalidValue" in "\n".join(run.error), run.report
    finally:
        db.put_device_property(STITCHER, {"ReintegrationBackend": ["chain"]})
        stitcher.Init()


def test_xrd_pressure_prints_the_mergers_pressure_sigma_and_rate_with_units(sardana):
    """Issue 19: the macro shows what the Merger's attributes hold. This chain's Merger has no Marker
    (its small acquisitions hold no gold): NaN, said as such; the numbers' format is checked below."""
    from tango_servers.demo import MERGER

    tmp, host, integrators, door = sardana
    merger = _devices(host, integrators)[MERGER]
    run = door.run("xrd_pressure")
    assert (run.state, run.error) == (tango.DevState.ON, []), run.report
    values = [merger.read_attribute(a).value for a in ("pressure", "pressureSigma", "compressionRate")]
    assert np.isnan(values).all() and run.result == ["nan"], run.report
    assert run.output == [f"{MERGER}: pressure NaN ± NaN (last frame), compression rate NaN"], run.report


def test_the_pressure_line_carries_the_units(monkeypatch):
    import importlib

    from sardana.macroserver.macro import Type

    for name in ("String", "Integer", "Float", "Boolean"):  # what a MacroServer's type manager fills in
        monkeypatch.setattr(Type, name, name, raising=False)
    pressure_text = importlib.import_module("sardana_macros.xrd_macros").pressure_text

    values = {"pressure": 61.234, "pressureSigma": 0.0449, "compressionRate": 102.5641}
    assert pressure_text("m", values) == "m: pressure 61.23 GPa ± 0.04 GPa (last frame), compression rate 102.564 GPa/s"
    values["compressionRate"] = "? (not readable)"
    assert pressure_text("m", values).endswith("compression rate ? (not readable)")
