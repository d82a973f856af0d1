"""The Merger's pressure without Tango (issue 19, live side): a merge stage with gold as its marker
writes the same ``/processed/pressure`` as ``xrd-pipeline pressure`` on its file, shows the file's
last frame once the scan closes, and its numbers are those of the published Fei 2007 scale for
patterns pyFAI made (tests/pressure_patterns.py), not ours."""

import json

import h5py
import numpy as np
import pytest

from pipeline_core.cli import main as cli_main
from pipeline_core.errors import ConfigError
from pipeline_core.live.merge_pressure import (
    LivePressure,
    PressureReading,
    compression_rate,
    detector_frame_period,
    settings_from_properties,
)
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.science.nexus_pressure import read_pressure

from .helpers import wait_for
from .pressure_patterns import BINS, OVERLAP, PONI, make_patterns

PERIOD_S = 0.05  # the Merger's FramePeriod here: 2.5 GPa per frame is 50 GPa/s
PRESSURES = np.linspace(0.0, 100.0, 41)
REAL_LAMBDA = PONI.parent / "testasapo1_1009_00002_m1_part00000.nxs"


@pytest.fixture(scope="module")
def ramp():
    """(radial axis, rows) of gold from 0 to 100 GPa, 2.5 GPa a frame, integrated by pyFAI."""
    return make_patterns(tuple(PRESSURES)).integrate()


def _batch(settings, radial, rows, numbers, part):
    n = len(numbers)
    return PatternBatch(
        f"ramp:{part}", "ramp", "lambda", "int0", part, settings.fingerprint(), np.array(numbers), np.arange(n),
        rows[np.array(numbers) - 1].astype(np.float32), radial, settings=settings.to_dict(),
        raw_file=f"/raw/ramp_m1_part{part:05d}.nxs", total_frames=len(rows),
    )  # fmt: skip


def _merge(tmp_path, ramp, parts, settings=None, period=PERIOD_S):
    radial, rows = ramp
    integration = IntegrationSettings(PONI, bins=BINS, unit="2th_deg")
    closed, errors = [], []
    pressure = LivePressure(settings_from_properties("au", "", "", 0.0) if settings is None else settings,
                            errors.append, period)  # fmt: skip
    stage = MergeStage(tmp_path, closed.append, errors.append, pressure=pressure)
    readings = []
    for k, numbers in enumerate(parts):
        stage.add_batch(_batch(integration, radial, rows, numbers, k))
        wait_for(lambda n=numbers: stage.pressure.reading.trace[:, 0].tolist()[-1:] != [] and
                 set(n) <= set(stage.pressure.reading.trace[:, 0].astype(int).tolist()) or closed,
                 60, "the batch's pressure")  # fmt: skip
        readings.append(stage.pressure.reading)
    wait_for(lambda: closed, 60, "the scan's file")
    stage.stop()
    return closed[0].path, stage.pressure.reading, readings, errors


@pytest.fixture(scope="module")
def merged(tmp_path_factory, ramp):
    """The stage's closed file of the ramp, batches out of order as several Integrators deliver them."""
    parts = [list(range(1, 15)), list(range(29, 42)), list(range(15, 29))]
    return _merge(tmp_path_factory.mktemp("merged"), ramp, parts)


def test_the_closed_file_holds_the_offline_pressure_and_the_attributes_its_last_frame(merged, capsys):
    path, reading, live, errors = merged
    assert errors == []
    with h5py.File(path, "r") as h5:
        written = read_pressure(h5)
        rate_written = float(h5["processed/pressure/compression_rate"][()])
        source = h5["processed/pressure/frame_period"].attrs["source"]
    assert written["frame_number"].tolist() == list(range(1, 42))
    clean = np.array([k not in OVERLAP for k in range(41)])
    # the published scale (Fei 2007, written out in pressure_patterns), not our code
    assert np.abs(written["pressure"][clean] - PRESSURES[clean]).max() < 0.05
    # one code path: `xrd-pipeline pressure` on the published file gives the file's numbers exactly
    assert cli_main(["pressure", str(path), "--marker", "au", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["pressure_gpa"] for r in records] == written["pressure"].tolist()
    assert [r["pressure_sigma_gpa"] for r in records] == written["pressure_errors"].tolist()
    # what the Merger shows after the close: the file's last frame, its trace, its rate
    assert reading.pressure_gpa == written["pressure"][-1] and reading.sigma_gpa == written["pressure_errors"][-1]
    assert np.array_equal(reading.trace, np.column_stack([np.arange(1.0, 42.0), written["pressure"]]))
    assert reading.rate_gpa_s == pytest.approx(50.0, rel=0.01) and rate_written == reading.rate_gpa_s
    assert "FramePeriod" in source
    # live, before the close: the tracker's values follow the ramp batch by batch (frames 1-14, then 29-41)
    assert live[0].trace[:, 0].tolist() == list(range(1, 15))
    assert live[1].pressure_gpa == pytest.approx(100.0, abs=0.05)
    assert np.abs(live[1].trace[14:, 1] - PRESSURES[28:]).max() < 0.05  # frames 29-41, told apart from 1-14


def test_a_refused_marker_scale_or_reflection_is_named(tmp_path):
    for args, named in [
        (("unobtainium", "", "", 0.0), "unobtainium"),
        (("au", "no-such-scale", "", 0.0), "no-such-scale"),
        (("au", "", "111,999", 0.0), "999"),
    ]:
        with pytest.raises(ConfigError, match=named):
            settings_from_properties(*args)
    assert settings_from_properties("  ", "x", "y", 0.0) is None  # no marker: no pressure, nothing checked


def test_without_a_marker_the_file_has_no_pressure_and_the_attributes_are_nan(tmp_path, ramp):
    path, reading, _, errors = _merge_off(tmp_path, ramp)
    with h5py.File(path, "r") as h5:
        assert "processed/pressure" not in h5
    assert np.isnan(reading.pressure_gpa) and reading.trace.shape == (0, 2) and errors == []


def _merge_off(tmp_path, ramp):
    radial, rows = ramp
    integration = IntegrationSettings(PONI, bins=BINS, unit="2th_deg")
    closed, errors = [], []
    stage = MergeStage(tmp_path, closed.append, errors.append)
    stage.add_batch(_batch(integration, radial, rows, list(range(1, 42)), 0))
    wait_for(lambda: closed, 60, "the scan's file")
    stage.stop()
    return closed[0].path, stage.pressure.reading, [], errors


def test_the_frame_period_comes_from_the_lambda_files_where_they_record_it(tmp_path):
    # real P02.2 file: count_time 100 ms + detector_readout_time 0 ms
    assert detector_frame_period(str(REAL_LAMBDA)) == pytest.approx(0.1)
    bare = tmp_path / "sim_m1_part00000.nxs"
    with h5py.File(bare, "w") as h5:
        h5.create_dataset("entry/instrument/detector/sequence_number", data=[1, 2])
    assert detector_frame_period(str(bare)) is None and detector_frame_period(str(tmp_path / "none.nxs")) is None


def test_the_compression_rate_is_the_slope_over_the_last_frames_with_a_value():
    numbers = np.arange(1, 41)
    pressure = np.where(numbers >= 20, 2.0 * numbers, 0.5 * numbers)  # the rate changed at frame 20
    pressure[-1] = np.nan  # the last frame has no value: the rate does not care
    assert compression_rate(numbers, pressure, 0.5) == pytest.approx(4.0)  # 2 GPa a frame, 2 frames a second
    assert np.isnan(compression_rate(numbers, pressure, None))
    reading = PressureReading.of("s", numbers, pressure, np.ones(40), 0.5)
    assert np.isnan(reading.pressure_gpa) and reading.trace.shape == (40, 2)


def test_heatmap_with_pressure_draws_the_files_pressure_along_the_frame_axis(merged, tmp_path, capsys):
    from pipeline_core.heatmap import heatmap_figure

    path = merged[0]
    with h5py.File(path, "r") as h5:
        written = read_pressure(h5)
    fig = heatmap_figure(path, pressure=True)
    image_axes, pressure_axes = fig.axes[:2]
    line = pressure_axes.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), written["pressure"])  # P along x, beside the frames
    np.testing.assert_array_equal(line.get_ydata(), written["frame_number"])
    assert pressure_axes.get_xlabel().startswith("pressure (GPa, ")  # the file's own label, marker named
    assert pressure_axes.get_ylim() == image_axes.get_ylim()  # one frame axis for both
    png = tmp_path / "with_pressure.png"
    assert cli_main(["heatmap", str(path), "--pressure", "-o", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png) and png.stat().st_size > 10_000


def test_heatmap_with_pressure_refuses_a_file_without_it(tmp_path, ramp, capsys):
    path = _merge_off(tmp_path, ramp)[0]
    assert cli_main(["heatmap", str(path), "--pressure"]) == 2  # EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{path} has no /processed/pressure" in err and not path.with_suffix(".png").exists()


def test_the_merger_refuses_a_bad_marker_in_status_without_an_error_and_merges_on():
    """The device's adapter (no server needed): the refusal names the values and goes to Status only
    (``report_error``, which makes State ALARM, is not called); the stage gets no pressure."""
    from types import SimpleNamespace

    from tango_servers.merger_pressure import MergerPressure

    errors: list[str] = []
    device = SimpleNamespace(Marker="unobtainium", PressureScale="", MarkerReflections="111", StartPressure=0.0,
                             FramePeriod=0.05)  # fmt: skip
    live = MergerPressure.live_pressure(device, errors.append)
    assert live.settings is None and errors == []
    note = MergerPressure.pressure_note(device)
    assert note.startswith("; no pressure: Marker 'unobtainium', PressureScale '', MarkerReflections '111' refused (")
    assert note.endswith("merging goes on without it")
    device = SimpleNamespace(Marker="au", PressureScale="", MarkerReflections="", StartPressure=0.0, FramePeriod=0.0)
    device.stage = SimpleNamespace(pressure=MergerPressure.live_pressure(device, errors.append))
    assert device.stage.pressure.settings.marker == "au" and device.stage.pressure.frame_period_s is None
    assert MergerPressure.pressure_note(device) == "; pressure from au" and errors == []


def test_a_new_scan_whose_live_fit_fails_shows_nan_not_the_previous_scans_pressure(tmp_path, ramp):
    """Scan A ends at 30 GPa; scan B's file records no wavelength yet, so its live fit is refused:
    the attributes must read NaN for B (not A's 30 GPa and 200 GPa/s) while B runs."""
    import dataclasses

    radial, rows = ramp
    integration = IntegrationSettings(PONI, bins=BINS, unit="2th_deg")
    errors: list[str] = []
    live = LivePressure(settings_from_properties("au", "", "", 0.0), errors.append, PERIOD_S)
    with h5py.File(tmp_path / "a.h5", "w") as a:
        a["processed/process/poni"] = PONI.read_text()
        live.merged(a, "2th_deg", _batch(integration, radial, rows, list(range(1, 14)), 0))
    assert live.reading.scan == "ramp" and live.reading.pressure_gpa == pytest.approx(30.0, abs=0.1)
    with h5py.File(tmp_path / "b.h5", "w") as b:  # no PONI text: a 2θ axis has no wavelength
        for part, numbers in enumerate(([1, 2], [3, 4])):
            live.merged(b, "2th_deg", dataclasses.replace(_batch(integration, radial, rows, numbers, part), scan="B"))
            shown = live.reading
            assert shown.scan == "B", shown
            assert np.isnan(shown.pressure_gpa) and np.isnan(shown.sigma_gpa) and np.isnan(shown.rate_gpa_s)
            assert shown.trace.shape == (0, 2)
    assert len(errors) == 1 and errors[0].startswith("scan B: no live pressure") and "wavelength" in errors[0]
