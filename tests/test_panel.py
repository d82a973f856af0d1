"""Issue 9: the operator panel (``xrd-pipeline panel``), off-screen, against a live chain.

Real server processes of the demo layout (simulator, Stitcher, two Integrators, Merger). The panel
sets the chain's settings (a valid Apply, then refusals: a PONI outside the calibration roots, a
PONI that does not parse — the chain keeps what it had), starts the chain, and shows a simulated
scan: states, counters equal to the frames, the last pattern on an axis labelled in the unit, the
heatmap's rows. The test writes a screenshot (path printed); docs/panel.png, README's picture, is
written when missing or with XRD_UPDATE_PANEL_PNG=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import tango

from pipeline_core.simulate import write_calibration

from .helpers import REPO, real_servers, wait_for

FRAMES, PER_FILE, BINS = 12, 4, 300

# -- without Qt ----------------------------------------------------------------------------------------


def test_panel_options_default_to_the_demo_layout_and_without_the_extra_say_what_to_install(monkeypatch, capsys):
    import argparse

    from tango_servers.panel_command import INSTALL_HINT, add_panel_command, chain_from_args, cmd_panel

    parser = argparse.ArgumentParser()
    add_panel_command(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("TANGO_HOST", "beamline:10000")
    chain = chain_from_args(parser.parse_args(["panel"]))
    assert chain.devices == ("p02/xrd/stitcher", "p02/xrd/integrator1", "p02/xrd/integrator2", "p02/xrd/merger")
    assert chain.trl(chain.merger, "queueDepth") == "tango://beamline:10000/p02/xrd/merger/queueDepth"
    other = chain_from_args(parser.parse_args(["panel", "--tango-host", "h:1", "--integrator", "x/y/z"]))
    assert (other.tango_host, other.integrators) == ("h:1", ("x/y/z",))

    monkeypatch.setitem(sys.modules, "tango_servers.panel", None)  # as if Qt/Taurus were not installed
    args = type("Args", (), {"tango_host": "localhost:1", "stitcher": "a/b/c", "integrators": None, "merger": "a/b/d"})
    assert cmd_panel(args) == 2
    assert INSTALL_HINT in capsys.readouterr().err and "pip install xrd-pipeline[panel]" in INSTALL_HINT


_WRITER = """
import sys, numpy as np
from pipeline_core.formats.nexus import MergedFileWriter
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings
w = MergedFileWriter(reserve_output(sys.argv[1]), np.linspace(5, 25, 16),
                     IntegrationSettings(sys.argv[2], bins=16), ["p0_m1.nxs"], ["a"], "scan")
w.add(np.arange(1, 6), np.ones((5, 16), np.float32), file_index=np.zeros(5, int), index_in_file=np.arange(5))
print("ready", flush=True)
sys.stdin.readline()
w.close()
"""


def test_the_heatmap_reads_the_part_file_the_merger_holds_open(tmp_path, small_poni):
    from tango_servers.panel_data import read_scan_so_far

    final = tmp_path / "scan_00001.nxs"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(final), str(small_poni)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        scan = read_scan_so_far(str(final))  # the Merger's currentOutputFile names the final file
        assert scan is not None and scan.path.name == "scan_00001.nxs.part" and scan.status == "running"
        assert scan.data.shape == (5, 16) and scan.frame_number.tolist() == [1, 2, 3, 4, 5]
        assert scan.axis_label == "2θ (deg)" and scan.axis[0] == 5.0
        assert read_scan_so_far(str(final), scan) is scan  # unchanged: not read again
    finally:
        writer.communicate("close\n", timeout=30)
    assert writer.returncode == 0
    done = read_scan_so_far(str(final))
    assert done.path == final and done.status == "complete"
    assert read_scan_so_far("") is None and read_scan_so_far(str(tmp_path / "none.nxs")) is None


# -- against a live chain ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tango_servers.demo import layout_for

    tmp = tmp_path_factory.mktemp("panel")
    poni, mask = write_calibration(tmp / "cal")
    (tmp / "cal" / "bad.poni").write_text("garbage\n")
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "other.poni").write_text(poni.read_text())
    specs, names = layout_for(tmp, integrators=2)
    tuned = {
        "Stitcher": {"FramesPerItem": ["4"], "CalibrationRoots": [str(tmp / "cal")]},
        "Integrator": {"PollInterval": ["0.3"]},
    }
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    with real_servers(tmp, specs) as host:
        for spec in specs:
            if spec.klass != "LambdaSimulator":
                dev = tango.DeviceProxy(f"tango://{host}/{spec.name}")
                wait_for(lambda d=dev: d.upstreamConnected, timeout_s=60, what=f"{spec.name} connected upstream")
        yield tmp, host, poni, mask


@pytest.fixture(scope="module")
def panel(chain):
    pytest.importorskip("taurus", reason="the panel needs the [panel] extra (taurus, PyQt5, pyqtgraph)")
    pytest.importorskip("pyqtgraph")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from tango_servers.panel import PanelWindow, application
    from tango_servers.panel_data import ChainNames

    tmp, host, _, _ = chain
    app = application()
    window = PanelWindow(ChainNames(host))
    window.show()
    yield app, window
    window.close()
    app.processEvents()
    window.deleteLater()
    app.processEvents()


def settle(app, predicate, timeout_s: float = 120.0, what: str = "the panel", window=None, show=None) -> None:
    """Run the Qt event loop until ``predicate()`` holds (the panel's timers and Taurus events run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
        if window is not None:
            window.refresh()
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f": {show()}" if show else ""))


def test_apply_sends_valid_settings_and_shows_refusals_keeping_the_chain_unchanged(chain, panel):
    tmp, host, poni, mask = chain
    app, window = panel
    box = window.settings
    stitcher = tango.DeviceProxy(f"tango://{host}/p02/xrd/stitcher")
    assert box.roots == [str(tmp / "cal")]

    assert box.choose(box.poni, "PONI file", str(poni)) and box.choose(box.mask, "mask file", str(mask))
    box.bins.setValue(BINS)
    box.unit.setCurrentText("2th_deg")
    assert box.apply(), box.message.text()
    in_force = (stitcher.poniPath, stitcher.maskPath, stitcher.bins, stitcher.unit)
    assert in_force == (str(poni), str(mask), BINS, "2th_deg")
    shown = lambda: {a: w.text() for a, w in box.in_force.items()}  # noqa: E731
    settle(app, lambda: shown()["bins"].startswith(str(BINS)), 30, "bins in force shown", show=shown)
    assert shown()["poniPath"] == str(poni) and shown()["unit"] == "2th_deg"
    assert box.message.text().startswith("applied:")

    outside = str(tmp / "elsewhere" / "other.poni")
    asked = []
    box.chooser = lambda parent, title, roots: asked.append((title, roots)) or outside  # the dialog's answer
    box.browse(box.poni, "PONI file")
    assert asked == [("Choose the PONI file", [str(tmp / "cal")])]
    assert "is outside the calibration roots" in box.message.text() and outside in box.message.text()
    assert box.poni.text() == str(poni)  # the refused file never reached the editor

    # all or nothing: a PONI that does not parse, with new bins and unit: nothing changes
    assert box.choose(box.poni, "PONI file", str(tmp / "cal" / "bad.poni"))
    box.bins.setValue(77)
    box.unit.setCurrentText("q_nm^-1")
    assert not box.apply()
    assert box.message.text().startswith("refused (XRD_InvalidValue)"), box.message.text()
    assert "bad.poni is not a pyFAI calibration" in box.message.text()
    assert (stitcher.poniPath, stitcher.bins, stitcher.unit) == (str(poni), BINS, "2th_deg")
    box.load()  # back to what is in force for the scan below
    assert (box.poni.text(), box.bins.value(), box.unit.currentText()) == (str(poni), BINS, "2th_deg")


def test_the_panel_shows_a_live_scan_and_writes_a_screenshot(chain, panel):
    tmp, host, _, _ = chain
    app, window = panel
    names = window.chain
    assert window.controls.start(), window.controls.message.text()
    sim = tango.DeviceProxy(f"tango://{host}/p02/xrd/lambda-sim")
    merger = window.proxies[names.merger]
    sim.FrameNumbers, sim.FramesPerFile, sim.rate = FRAMES, PER_FILE, 20.0
    stem = sim.Start()

    def merged() -> bool:
        return os.path.basename(merger.lastOutputFile).startswith(stem)

    settle(app, merged, 180, f"{stem} merged:\n{merger.status()}", window)
    table = window.devices

    def counters_shown() -> bool:
        processed = [_number(table.text(d, "processed")) for d in names.integrators]
        return (
            _number(table.text(names.merger, "processed")) == FRAMES
            and _number(table.text(names.stitcher, "processed")) == FRAMES
            and sum(processed) == FRAMES
            and window.heatmap.rows() == FRAMES
        )

    settle(app, counters_shown, 60, "the counters and the heatmap of the scan", window)
    for device in names.devices:
        shown = table.text(device, "state")
        proxy = window.proxies[device]
        assert shown in ("ON", "RUNNING"), (device, shown, proxy.state(), proxy.status())
        assert _number(table.text(device, "failed")) == 0
        assert table.text(device, "latency") not in ("", "-----")
    assert _number(table.text(names.merger, "received")) == FRAMES
    assert max(window.pattern.points().values()) == BINS
    assert window.pattern.x_label == "2θ (deg)"
    assert window.heatmap.scan.axis_label == "2θ (deg)" and window.heatmap.scan.data.shape == (FRAMES, BINS)
    assert window.heatmap.scan.frame_number.tolist() == list(range(1, FRAMES + 1))
    assert window.alarms.view.toPlainText() == "no device in ALARM"

    shot = window.screenshot(tmp / "panel.png")
    # README's picture: written when missing or on request, so that a test run leaves the tree unchanged
    docs = REPO / "docs" / "panel.png"
    if os.environ.get("XRD_UPDATE_PANEL_PNG") or not docs.exists():
        window.screenshot(docs)
    assert shot.stat().st_size > 10_000
    print(f"panel screenshot: {shot}")


def test_reintegrate_from_the_panel_returns_at_once_and_a_bad_path_is_refused(chain, panel):
    tmp, host, _, _ = chain
    app, window = panel
    controls = window.controls
    assert not controls.reintegrate(str(tmp / "raw" / "missing_m1_part00000.nxs"))
    assert "Reintegrate refused (XRD_InvalidValue)" in controls.message.text(), controls.message.text()
    merger = window.proxies[window.chain.merger]
    before = merger.lastOutputFile
    raw = sorted((tmp / "raw").glob("*_m1_part00000.nxs"))[0]
    t0 = time.monotonic()
    assert controls.reintegrate(str(raw)), controls.message.text()
    assert time.monotonic() - t0 < 2.0 and "queued" in controls.message.text()
    settle(app, lambda: merger.lastOutputFile != before, 120, f"the reintegrated file:\n{merger.status()}", window)
    settle(app, lambda: window.heatmap.rows() == FRAMES and "_v001" in window.heatmap.scan.path.name, 30,
           "the heatmap of the reintegration", window)
    assert window.controls.stop(), window.controls.message.text()


def _number(text: str) -> float | None:
    """The number a Taurus label shows ("12", "12 frames", "0.53 s"), or None."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None
