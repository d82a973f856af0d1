"""Issue 9: the operator panel (``xrd-pipeline panel``), off-screen, against a live chain.

Real server processes of the demo layout (simulator, Stitcher, two Integrators, Merger). The panel
sets the chain's settings (a valid Apply, then refusals: a PONI outside the calibration roots, a
PONI that does not parse — the chain keeps what it had), starts the chain, and shows a simulated
scan: states, counters equal to the frames, the last pattern on an axis labelled in the unit, the
heatmap's rows. The test writes a screenshot (path printed); docs/panel.png, README's picture, is
written when missing or with XRD_UPDATE_PANEL_PNG=1.

Only the panel's own timers and Taurus events refresh it (issue 18): the editor follows a change made
elsewhere and Apply sends only the operator's edits; states are painted in Tango's colours (read
from the pixels); Clear errors acknowledges an ALARM; ``xrd-pipeline panel`` stops on INT, TERM and
HUP with 128 + the signal, and names the missing X11 libraries instead of letting Qt abort.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import tango

from pipeline_core.messages import RequeueRequest, SettingsRequest
from pipeline_core.simulate import write_calibration

from .helpers import REPO, real_servers, wait_for

FRAMES, PER_FILE, BINS = 12, 4, 300

# -- without Qt ----------------------------------------------------------------------------------------


def test_panel_options_default_to_the_demo_layout_and_without_the_extra_say_what_to_install(
    monkeypatch, capsys, tmp_path
):
    import argparse

    from tango_servers.clients.panel.command import INSTALL_HINT, add_panel_command, chain_from_args, cmd_panel

    parser = argparse.ArgumentParser()
    add_panel_command(parser.add_subparsers(dest="command"))
    monkeypatch.setenv("TANGO_HOST", "beamline:10000")
    chain = chain_from_args(parser.parse_args(["panel"]))
    assert chain.devices == ("p02/xrd/stitcher", "p02/xrd/integrator1", "p02/xrd/integrator2", "p02/xrd/merger")
    assert chain.trl(chain.merger, "queueDepth") == "tango://beamline:10000/p02/xrd/merger/queueDepth"
    other = chain_from_args(parser.parse_args(["panel", "--tango-host", "h:1", "--integrator", "x/y/z"]))
    assert (other.tango_host, other.integrators) == ("h:1", ("x/y/z",))
    config = tmp_path / "chain.yaml"  # the chain: section of a client's --config file; options win over it
    config.write_text("chain:\n  integrators: [a/b/i1]\n  merger: a/b/m\n")
    named = chain_from_args(parser.parse_args(["panel", "--config", str(config), "--merger", "c/d/m"]))
    assert (named.integrators, named.merger, named.stitcher) == (("a/b/i1",), "c/d/m", "p02/xrd/stitcher")
    config.write_text("chain:\n  merger: nonsense\n")
    with pytest.raises(SystemExit, match="chain: merger 'nonsense': expected a device name domain/family/member"):
        chain_from_args(parser.parse_args(["panel", "--config", str(config)]))

    monkeypatch.setitem(sys.modules, "tango_servers.clients.panel.window", None)  # as if Qt/Taurus were not installed
    args = type("Args", (), {"tango_host": "localhost:1", "stitcher": "a/b/c", "integrators": None, "merger": "a/b/d"})
    assert cmd_panel(args) == 2
    assert INSTALL_HINT in capsys.readouterr().err and "pip install xrd-pipeline[panel]" in INSTALL_HINT


def test_apply_sends_only_the_fields_the_operator_changed():
    from tango_servers.clients.settings_request import edited_settings, settings_request

    in_force = {"poniPath": "/cal/a.poni", "maskPath": "", "bins": 1000, "unit": "2th_deg"}
    editor = {**in_force, "unit": "q_nm^-1"}
    assert edited_settings(in_force, editor) == {"unit": "q_nm^-1"}
    request = SettingsRequest.from_json(settings_request({"unit": "q_nm^-1"}))
    assert request.changes() == {"unit": "q_nm^-1"}  # bins, PONI, mask: not sent, so left as they are
    assert SettingsRequest.from_json(settings_request({"maskPath": ""})).changes() == {"mask_path": ""}
    for changes, why in (
        ({}, "expected at least one of"),
        ({"poniPath": ""}, "expected the path of a PONI file"),
        ({"unit": "furlong"}, "unit 'furlong' is unknown; expected one of 2th_deg"),
        ({"binz": 3}, "unknown setting(s) binz"),
    ):
        with pytest.raises(ValueError) as refused:
            settings_request(changes)
        assert why in str(refused.value)


def test_without_the_x11_libraries_the_panel_names_the_debian_packages_and_exits_2(monkeypatch, capsys):
    pytest.importorskip("taurus", reason="the panel needs the [panel] extra (taurus, PyQt5, pyqtgraph)")
    from tango_servers.clients.panel import qt_platform as panel_platform
    from tango_servers.clients.panel.command import cmd_panel

    absent = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-xinerama.so.0"}
    monkeypatch.setattr(panel_platform, "loadable", lambda soname: soname not in absent)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    args = type("Args", (), {"tango_host": "localhost:1", "stitcher": "a/b/c", "integrators": None, "merger": "a/b/d"})
    assert cmd_panel(args) == 2
    err = capsys.readouterr().err
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0   (or" in err, err

    monkeypatch.setattr(panel_platform, "loadable", lambda soname: True)
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cmd_panel(args) == 2
    assert "no X display: DISPLAY is not set" in capsys.readouterr().err
    assert panel_platform.platform_problem({"QT_QPA_PLATFORM": "offscreen"}, lambda soname: False) == ""


def test_the_panel_command_does_not_let_qt_abort_where_x11_libraries_are_missing():
    pytest.importorskip("taurus", reason="the panel needs the [panel] extra (taurus, PyQt5, pyqtgraph)")
    from tango_servers.clients.panel.qt_platform import missing_xcb_packages

    missing = missing_xcb_packages()
    if not missing:
        pytest.skip("every library of Qt's xcb plugin is installed here: Qt would start (the check above covers it)")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99"}
    done = subprocess.run(
        [sys.executable, "-m", "tango_servers.cli", "panel", "--tango-host", "127.0.0.1:1"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # Qt's abort: -6 (134 from a shell)
    assert f"sudo apt-get install {' '.join(missing)}" in done.stderr


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
    from tango_servers.clients.scan_so_far import read_scan_so_far

    final = tmp_path / "scan_00001.nxs"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(final), str(small_poni)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
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
    specs, names = layout_for(tmp, integrators=2, marker="au", rate=20.0)  # the Merger follows gold (P(t))
    tuned = {
        "Stitcher": {"FramesPerItem": ["4"], "CalibrationRoots": [str(tmp / "cal")]},
        "Integrator": {"PollInterval": ["0.3"]},
    }
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    with real_servers(tmp, specs) as host:  # every device connected upstream already
        yield tmp, host, poni, mask


@pytest.fixture(scope="module")
def panel(chain):
    pytest.importorskip("taurus", reason="the panel needs the [panel] extra (taurus, PyQt5, pyqtgraph)")
    pytest.importorskip("pyqtgraph")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from tango_servers.clients.chain_names import ChainNames
    from tango_servers.clients.panel.window import PanelWindow, application

    tmp, host, _, _ = chain
    app = application()
    window = PanelWindow(ChainNames(host))
    window.show()
    yield app, window
    window.close()
    app.processEvents()
    window.deleteLater()
    app.processEvents()


def settle(app, predicate, timeout_s: float = 120.0, what: str = "the panel", show=None) -> None:
    """Run the Qt event loop until ``predicate()`` holds. Only the panel's own timers and Taurus
    events refresh it (nothing here calls a refresh): what the test sees is what an operator sees."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents()
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
    from tango_servers.clients.states import STATE_COLOURS

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

    settle(app, merged, 180, f"{stem} merged:\n{merger.status()}")
    table = window.devices

    def counters_shown() -> bool:
        processed = [_number(table.text(d, "processed")) for d in names.integrators]
        return (
            _number(table.text(names.merger, "processed")) == FRAMES
            and _number(table.text(names.stitcher, "processed")) == FRAMES
            and sum(processed) == FRAMES
            and window.heatmap.rows() == FRAMES
            and max(window.pattern.points().values()) == BINS
        )

    settle(app, counters_shown, 60, "the counters and the heatmap of the scan")
    for device in names.devices:
        shown = table.text(device, "state")
        proxy = window.proxies[device]
        assert shown in ("ON", "RUNNING"), (device, shown, proxy.state(), proxy.status())
        # Tango's colours: ON green (0, 255, 0), RUNNING dark green (0, 125, 0)
        assert painted(table.cells[(device, "state")]) == STATE_COLOURS[shown], (device, shown)
        assert _number(table.text(device, "failed")) == 0
        assert table.text(device, "latency") not in ("", "-----")
    assert _number(table.text(names.merger, "received")) == FRAMES
    assert window.pattern.x_label == "2θ (deg)"
    assert window.heatmap.scan.axis_label == "2θ (deg)" and window.heatmap.scan.data.shape == (FRAMES, BINS)
    assert window.heatmap.scan.frame_number.tolist() == list(range(1, FRAMES + 1))
    settle(
        app,
        lambda: window.alarms.view.toPlainText() == "no device in ALARM",
        10,
        "no alarm shown",
        show=window.alarms.view.toPlainText,
    )

    _assert_pressure_shown(app, window, merger)
    shot = window.screenshot(tmp / "panel.png")
    # README's picture: written when missing or on request, so that a test run leaves the tree unchanged
    docs = REPO / "docs" / "panel.png"
    if os.environ.get("XRD_UPDATE_PANEL_PNG") or not docs.exists():
        window.screenshot(docs)
    assert shot.stat().st_size > 10_000
    print(f"panel screenshot: {shot}")


def _assert_pressure_shown(app, window, merger) -> None:
    """Issue 19: P(t) beside the heatmap is the Merger's pressureTrace (the closed file's), titled with
    its last pressure and rate."""
    import numpy as np

    from tango_servers.clients.panel.pressure_plot import pressure_title

    trace = merger.pressureTrace
    assert trace.shape == (FRAMES, 2) and trace[:, 0].tolist() == list(range(1, FRAMES + 1))
    title = pressure_title(merger.pressure, merger.pressureSigma, merger.compressionRate)
    box = window.pressure

    def drawn():
        x, y = box.curve.getData()
        return None if x is None else np.column_stack([x, y])

    # title and curve each settle on a later refresh: the Merger pushes the pressure before the trace
    # reaches its last row, so one refresh may show the final title over an earlier curve
    settle(app, lambda: box.title == title, 30, "the pressure's title", show=lambda: (box.title, title))
    settle(app, lambda: drawn() is not None and np.array_equal(drawn(), trace, equal_nan=True), 30,
           "the pressure curve", show=lambda: (drawn(), trace))  # fmt: skip


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
    settle(app, lambda: merger.lastOutputFile != before, 120, f"the reintegrated file:\n{merger.status()}")
    settle(
        app,
        lambda: window.heatmap.rows() == FRAMES and "_v001" in window.heatmap.scan.path.name,
        30,
        "the heatmap of the reintegration",
    )
    assert window.controls.stop(), window.controls.message.text()


def _number(text: str) -> float | None:
    """The number a Taurus label shows ("12", "12 frames", "0.53 s"), or None."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def painted(widget) -> tuple[int, int, int]:
    """The background colour the widget paints (left of its text), as the operator sees it."""
    image = widget.grab().toImage()
    colour = image.pixelColor(3, image.height() // 2)
    return colour.red(), colour.green(), colour.blue()


def test_the_editor_follows_the_chain_and_apply_sends_only_what_the_operator_changed(chain, panel):
    host = chain[1]
    app, window = panel
    box = window.settings
    stitcher = tango.DeviceProxy(f"tango://{host}/p02/xrd/stitcher")
    poni_before = stitcher.poniPath
    stitcher.SetSettings(SettingsRequest(bins=1000).to_json())  # as xrd_settings (a macro) does
    settle(app, lambda: box.bins.value() == 1000, 30, "the editor to follow bins set elsewhere", show=box.bins.value)
    assert box.edited() == {}

    box.unit.setCurrentText("q_nm^-1")  # the operator edits the unit only
    assert box.apply(), box.message.text()
    assert (stitcher.bins, stitcher.unit, stitcher.poniPath) == (1000, "q_nm^-1", poni_before)
    assert box.message.text() == "applied: unit q_nm^-1 (from the next work item on)"

    # edited here while a macro changes the same field: the panel says so; Apply then sends the edit
    box.bins.setValue(500)
    stitcher.SetSettings(SettingsRequest(bins=800).to_json())
    settle(
        app,
        lambda: "bins was changed on the chain to 800 while you edited it" in box.message.text(),
        30,
        "the panel to name the change made meanwhile",
        show=box.message.text,
    )
    assert box.bins.value() == 500 and box.edited() == {"bins": 500}
    assert box.apply(), box.message.text()
    assert (stitcher.bins, stitcher.unit) == (500, "q_nm^-1")
    stitcher.SetSettings(SettingsRequest(bins=BINS, unit="2th_deg").to_json())
    settle(app, lambda: (box.bins.value(), box.unit.currentText()) == (BINS, "2th_deg"), 30, "the editor back")


def test_an_alarm_is_painted_orange_and_clear_errors_acknowledges_it(chain, panel):
    from tango_servers.clients.states import STATE_COLOURS

    host = chain[1]
    app, window = panel
    names, table = window.chain, window.devices
    stitcher = tango.DeviceProxy(f"tango://{host}/{names.stitcher}")
    # a problem the Stitcher reports (State ALARM until acknowledged): frames of a scan it never saw
    stitcher.RequeueFrames(RequeueRequest(scan="ghost_00001", frames=[1]).to_json())
    wait_for(lambda: stitcher.state() == tango.DevState.ALARM, 60, "the Stitcher in ALARM")
    cell = table.cells[(names.stitcher, "state")]
    settle(app, lambda: table.text(names.stitcher, "state") == "ALARM", 60, "ALARM in the state column")
    assert painted(cell) == STATE_COLOURS["ALARM"] == (255, 140, 0)
    settle(
        app,
        lambda: "ghost_00001" in window.alarms.view.toPlainText(),
        30,
        "the Stitcher's Status in Alarms",
        show=window.alarms.view.toPlainText,
    )

    def cleared() -> bool:  # the panel waits 1 s for each device: on a loaded host the operator clicks again
        window.alarms.clear_button.click()
        return window.alarms.message.text().startswith(f"ClearErrors sent to {names.stitcher}")

    settle(app, cleared, 30, "ClearErrors sent to the Stitcher", show=window.alarms.message.text)
    assert stitcher.state() in (tango.DevState.ON, tango.DevState.RUNNING), stitcher.status()
    assert "ghost_00001" not in stitcher.status()
    settle(app, lambda: table.text(names.stitcher, "state") in ("ON", "RUNNING"), 60, "the state column after it")
    assert painted(cell) == STATE_COLOURS[table.text(names.stitcher, "state")]
    assert "ghost_00001" not in window.alarms.view.toPlainText()


def test_the_panel_command_stops_on_int_term_hup_with_128_plus_the_signal(chain):
    import signal
    import threading

    pytest.importorskip("taurus", reason="the panel needs the [panel] extra (taurus, PyQt5, pyqtgraph)")
    host = chain[1]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TANGO_HOST": host}
    panels, said = {}, {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        panels[sig] = subprocess.Popen(
            [sys.executable, "-m", "tango_servers.cli", "panel"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        said[sig] = []
        threading.Thread(target=lambda p=panels[sig], out=said[sig]: out.extend(p.stderr), daemon=True).start()
    try:
        for sig, proc in panels.items():
            wait_for(
                lambda s=sig: any("xrd-pipeline panel: open on" in line for line in said[s]),
                180,
                f"the panel (for {sig.name}) to open",
            )
            proc.send_signal(sig)
        for sig, proc in panels.items():
            assert proc.wait(timeout=60) == 128 + sig, "".join(said[sig])[-2000:]
            wait_for(
                lambda s=sig: any(f"interrupted ({s.name})" in line for line in said[s]),
                10,
                f"the panel to say it was interrupted by {sig.name}",
            )
    finally:
        for proc in panels.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
