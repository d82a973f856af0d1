"""Every attribute of every device of a live chain, read once after a scan, its value checked; and the
change events an event-driven client (Taurus subscribes) gets during that scan.

Real server processes (simulator → Stitcher → 2 Integrators → Merger, the demo layout) on the
embedded database. A new attribute without a check here fails the test: each attribute's value is
checked for what an operator would see, not only its configuration. Units must parse with pint,
as Taurus parses them (an unknown unit is dropped with a warning).
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pint
import pytest
import tango

from pipeline_core.messages import PatternBatch, ScanInfo
from pipeline_core.simulate import write_calibration
from tango_servers.counter_attributes import ThroughputWindow

from .helpers import real_servers, wait_for

SIM, STITCHER, MERGER = "p02/xrd/lambda-sim", "p02/xrd/stitcher", "p02/xrd/merger"
INTEGRATORS = ("p02/xrd/integrator1", "p02/xrd/integrator2")
PIPELINE = (STITCHER, *INTEGRATORS, MERGER)
FRAMES, PER_FILE, BINS = 20, 10, 100
WATCHED = ("State", "Status", "currentScan")
#: seconds the throughput attribute averages over
THROUGHPUT_WINDOW_S = ThroughputWindow().seconds


def _listen(targets: list[tuple[str, str]], events, ready, stop) -> None:
    """In a spawned process: subscribe to change events of each (TRL, attribute), put each on ``events``."""
    proxies: dict[str, tango.DeviceProxy] = {}

    def record(event) -> None:
        if event.err:
            events.put(("", f"{event.attr_name}: {event.errors[0].desc}", None))
        else:
            events.put((event.device.dev_name(), event.attr_name.split("/")[-1].lower(), event.attr_value.value))

    ids = []
    for trl, attr in targets:
        proxy = proxies.setdefault(trl, tango.DeviceProxy(trl))
        ids.append((proxy, proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, record)))
    ready.set()
    stop.wait(600)
    for proxy, event_id in ids:
        proxy.unsubscribe_event(event_id)


class EventLog:
    """Change events of (device, attribute) in arrival order, as a client process subscribed to them sees them.

    The subscriptions live in a spawned process: a test process that has subscribed to events
    breaks the events between the devices of a MultiDeviceTestContext(process=True) forked later
    (tests/test_devices.py), whatever order the tests run in."""

    def __init__(self, targets: list[tuple[str, str]]):
        context = multiprocessing.get_context("spawn")
        self._queue, self._ready, self._stop = context.Queue(), context.Event(), context.Event()
        self._process = context.Process(target=_listen, args=(targets, self._queue, self._ready, self._stop))
        self.events: list[tuple[str, str, object]] = []
        self.errors: list[str] = []

    def __enter__(self) -> EventLog:
        self._process.start()
        assert self._ready.wait(60), "the listening process did not subscribe within 60 s"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._process.is_alive():  # drain while it exits: a child with queued items cannot be joined
            self._drain()
            self._process.join(0.1)
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                device, attr, value = self._queue.get_nowait()
            except queue.Empty:
                return
            if device:
                self.events.append((device, attr, value))
            else:
                self.errors.append(attr)

    def values(self, device: str, attr: str) -> list:
        self._drain()
        return [v for d, a, v in self.events if d == device and a == attr.lower()]


class RateSampler:
    """Reads ``throughput`` and ``framesProcessed`` of each device every ``period_s`` on its own thread
    (own proxies), as an operator's panel does during a scan: ``samples[trl]`` = [(time, frames, rate)].

    Half a second, as the device's publisher: the device's window holds 50 samples, so more frequent
    reads would shorten the span it averages over."""

    def __init__(self, trls: dict[str, str], period_s: float = 0.5):
        self._trls, self._period_s = trls, period_s
        self.samples: dict[str, list[tuple[float, int, float]]] = {name: [] for name in trls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rate-sampler", daemon=True)

    def __enter__(self) -> RateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        proxies = {name: tango.DeviceProxy(trl) for name, trl in self._trls.items()}
        while not self._stop.wait(self._period_s):
            for name, proxy in proxies.items():
                frames, rate = (a.value for a in proxy.read_attributes(["framesProcessed", "throughput"]))
                self.samples[name].append((time.monotonic(), int(frames), float(rate)))


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A chain that has processed one scan of FRAMES frames while a client listened to State,
    Status and currentScan of every device."""
    from tango_servers.demo import layout_for

    tmp = tmp_path_factory.mktemp("every-attribute")
    specs, names = layout_for(tmp, integrators=2, marker="au", rate=50.0)  # the Merger follows gold's pressure
    assert tuple(names) == INTEGRATORS
    tuned = {"Stitcher": {"FramesPerItem": ["5"]}, "Integrator": {"PollInterval": ["0.3"]}}
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    with real_servers(tmp, specs) as host:
        up_at = time.monotonic()  # each device has sampled its throughput since before this
        devices = {s.name: tango.DeviceProxy(f"tango://{host}/{s.name}") for s in specs}
        for dev in devices.values():
            dev.set_timeout_millis(10_000)
        # before anything is written: the unit the chain integrates with, as value and set-point
        unit_before = {n: devices[n].read_attribute("unit") for n in PIPELINE}
        poni, mask = write_calibration(tmp / "cal")
        stitcher = devices[STITCHER]
        stitcher.poniPath, stitcher.maskPath, stitcher.bins = str(poni), str(mask), BINS
        with EventLog([(f"tango://{host}/{name}", a) for name in devices for a in WATCHED]) as log:
            sim = devices[SIM]
            sim.FrameNumbers, sim.FramesPerFile, sim.rate = FRAMES, PER_FILE, 50.0
            with RateSampler({n: f"tango://{host}/{n}" for n in PIPELINE}) as rates:
                started_at = time.monotonic()
                stem = sim.Start()
                merger = devices[MERGER]
                wait_for(lambda: merger.lastOutputFile.endswith(f"{stem}.nxs"), 120, f"{stem}.nxs:\n{merger.status()}")
                for name in devices:  # the publisher pushes ON once each device is idle again
                    wait_for(
                        lambda name=name: log.values(name, "State")[-1:] == [tango.DevState.ON],
                        20,
                        f"the ON event of {name} after the scan; State events: {log.values(name, 'State')}",
                    )
            yield {
                "host": host,
                "devices": devices,
                "stem": stem,
                "log": log,
                "poni": poni,
                "mask": mask,
                "unit_before": unit_before,
                "rates": rates.samples,
                "up_at": up_at,
                "started_at": started_at,
            }


# -- what each attribute must hold after the scan: value -> bool, given the fixture's context -------------------
def _pipeline_common(ctx, name) -> dict:
    stem = ctx["stem"]
    return {
        "currentScan": lambda v: v == stem,
        "throughput": lambda v: isinstance(v, float) and v >= 0,  # a rate after the scan: see the test below
        "latency": lambda v: 0 < v < 60,
        "upstreamConnected": lambda v: v is True,
        "outputDirectory": lambda v: isinstance(v, str) and v != "",
        "framesFailed": lambda v: v == 0,
        "poniPath": lambda v: v == str(ctx["poni"]),
        "maskPath": lambda v: v == str(ctx["mask"]),
        "bins": lambda v: v == BINS,
        "unit": lambda v: v == "2th_deg",
    }


def _expected(ctx, name: str) -> dict:
    devices, stem = ctx["devices"], ctx["stem"]
    if name == SIM:
        return {
            "currentScan": lambda v: v == stem,
            "lastWrittenFile": lambda v: v.endswith(f"{stem}_m3_part00001.nxs") and Path(v).is_file(),
            "framesWritten": lambda v: v == FRAMES,
            "LatestImageNumber": lambda v: v == FRAMES,
            "FrameNumbers": lambda v: v == FRAMES,
            "FramesPerFile": lambda v: v == PER_FILE,
            "rate": lambda v: v == 50.0,
            "writeLag": lambda v: v == 0.0,
            "SaveFilePath": lambda v: Path(v, f"{stem}_m1_part00000.nxs").is_file(),
            "SaveFileName": lambda v: v == "",
            "FilePrefix": lambda v: stem.startswith(v + "_"),
            "FileStartNum": lambda v: v == int(stem.rsplit("_", 1)[1]) + 1,
            "poniPath": lambda v: Path(v).is_file(),
            "maskPath": lambda v: Path(v).is_file(),
        }
    common = _pipeline_common(ctx, name)
    if name == STITCHER:
        return {
            **common,
            "framesReceived": lambda v: v == FRAMES,
            "framesProcessed": lambda v: v == FRAMES,
            "lastOutputFile": lambda v: v == "",
            "scanInfo": lambda v: ScanInfo.from_json(v).scan == stem and ScanInfo.from_json(v).total_frames == FRAMES,
            "settings": lambda v: json.loads(v)["bins"] == BINS and len(json.loads(v)["fingerprint"]) == 16,
            "queueDepth": lambda v: v == 0,
            "workAvailable": lambda v: v == 0,
            "itemsLeased": lambda v: v == 0,
            "itemsRequeued": lambda v: v == 0,
            "requeuesPending": lambda v: v == 0,
            "reintegrationsPending": lambda v: v == 0,
            "frameShape": lambda v: len(v) == 2 and min(v) > 0,
            "mask": lambda v: list(v.shape) == devices[STITCHER].frameShape.tolist() and 0 < v.sum() < v.size,
            "detectorAnnouncement": lambda v: v.startswith(f"following Lambda {SIM} (change events + polling"),
            "jobs": lambda v: json.loads(v) == [],
            "lastJobState": lambda v: v == "",
        }
    if name in INTEGRATORS:
        return {
            **common,
            "framesReceived": lambda v: v == devices[name].framesProcessed,
            "framesProcessed": lambda v: 0 <= v <= FRAMES
            and sum(devices[n].framesProcessed for n in INTEGRATORS) == FRAMES,
            "lastOutputFile": lambda v: v == "",
            "patterns": lambda v: PatternBatch.decode(*v).scan == stem,
            "lastPattern": lambda v: len(v) == BINS and np.isfinite(v).all() and v.max() > 0,
            "radialAxis": lambda v: len(v) == BINS and (np.diff(v) > 0).all(),
            "busyFraction": lambda v: 0 <= v <= 1,
            "hintsWhileStopped": lambda v: v == 0,  # started from init on (AutoStart): none declined
            # an Integrator that integrated got its engine somehow: loaded or built, for the chain's PONI
            "engineSource": lambda v: v == "no engine yet"
            if devices[name].framesProcessed == 0
            else ("lambda2m.poni: loaded from the engine cache " in v or "lambda2m.poni: built in " in v),
        }
    assert name == MERGER, name
    return {
        **common,
        "framesReceived": lambda v: v == FRAMES,
        "framesProcessed": lambda v: v == FRAMES,
        "lastOutputFile": lambda v: v.endswith(f"processed/{stem}.nxs") and Path(v).is_file(),
        "currentOutputFile": lambda v: v == devices[MERGER].lastOutputFile,
        "queueDepth": lambda v: v == 0,
        **_pressure_expected(devices[MERGER].lastOutputFile),
    }


def _pressure_expected(path: str) -> dict:
    """The Merger's pressure attributes after the scan: its file's last frame and its trace (issue 19)."""
    import h5py

    from pipeline_core.science.nexus_pressure import read_pressure

    with h5py.File(path, "r") as h5:
        p, rate = read_pressure(h5), float(h5["processed/pressure/compression_rate"][()])
    trace = np.column_stack([np.arange(1.0, FRAMES + 1), p["pressure"]])
    return {
        "pressure": lambda v: np.array_equal([v], p["pressure"][-1:], equal_nan=True),
        "pressureSigma": lambda v: np.array_equal([v], p["pressure_errors"][-1:], equal_nan=True),
        "compressionRate": lambda v: np.array_equal([v], [rate], equal_nan=True),
        "pressureTrace": lambda v: np.array_equal(v, trace, equal_nan=True),
    }


PYTHON_TYPES = {
    tango.CmdArgType.DevLong64: (int, np.integer),
    tango.CmdArgType.DevLong: (int, np.integer),
    tango.CmdArgType.DevDouble: (float,),
    tango.CmdArgType.DevString: (str,),
    tango.CmdArgType.DevBoolean: (bool,),
    tango.CmdArgType.DevEncoded: (tuple,),
    tango.CmdArgType.DevState: (tango.DevState,),
}
#: attributes an operator form does not need (transport, hints to other devices, big images)
EXPERT = {(STITCHER, "scanInfo"), (STITCHER, "settings"), (STITCHER, "mask")} | {
    (n, a) for n in INTEGRATORS for a in ("patterns", "hintsWhileStopped", "engineSource")
}


def test_every_attribute_of_every_device_reads_a_plausible_value_after_a_scan(scanned):
    for name, dev in scanned["devices"].items():
        expected = _expected(scanned, name)
        attrs = set(dev.get_attribute_list()) - {"State", "Status"}
        assert attrs == set(expected), f"{name}: attributes without a check here: {sorted(attrs ^ set(expected))}"
        together = {a.name: a for a in dev.read_attributes(sorted(attrs))}  # as Taurus reads: one call
        for attr in sorted(attrs):
            value = dev.read_attribute(attr).value  # raises DevFailed if the attribute cannot be read
            assert not together[attr].has_failed, (name, attr)
            cfg = dev.get_attribute_config(attr)
            if cfg.data_format == tango.AttrDataFormat.SCALAR:
                assert isinstance(value, PYTHON_TYPES[cfg.data_type]), (name, attr, value)
            assert expected[attr](value), f"{name}/{attr} = {value!r}"
        assert dev.state() == tango.DevState.ON, f"{name}: {dev.status()}"


def test_throughput_during_the_scan_is_near_frames_over_elapsed_on_every_pipeline_device(scanned):
    """The rate an operator sees while frames flow: its peak is each device's frames over the time it
    averages over -- the window, or the time since the device started sampling if shorter, or the
    device's own span of work if longer -- within a generous factor (a load-independent check: a rate
    stuck at 0, or off by a unit such as frames/ms, fails)."""
    for name in PIPELINE:
        samples = scanned["rates"][name]
        frames, peak = samples[-1][1], max(rate for _, _, rate in samples)
        if frames == 0:  # an Integrator the other one left no work to
            assert name in INTEGRATORS and peak == 0.0, (name, samples)
            continue
        done_at = min(t for t, n, _ in samples if n == frames)
        elapsed = max(done_at - scanned["started_at"], min(THROUGHPUT_WINDOW_S, done_at - scanned["up_at"]))
        expected = frames / elapsed
        assert 0.2 * expected <= peak <= 5 * expected, (
            f"{name}: peak throughput {peak:.2f}/s for {frames} frames over {elapsed:.1f} s "
            f"(expected {expected:.2f}/s within 0.2x..5x); samples (t, frames, rate): {samples}"
        )
    assert sum(scanned["rates"][n][-1][1] for n in INTEGRATORS) == FRAMES  # every frame sampled as processed
    assert scanned["devices"][MERGER].get_attribute_config("throughput").unit == "1/s"


def test_state_status_and_current_scan_arrive_as_events_during_the_scan(scanned):
    log, stem, devices = scanned["log"], scanned["stem"], scanned["devices"]
    assert log.errors == []
    # how the work items fell between the two Integrators is the work queue's choice: one of them may
    # have taken a single item (or none); an Integrator that integrated nothing was never busy
    worked = {n for n in INTEGRATORS if devices[n].framesProcessed > 0}
    assert worked, "no Integrator integrated anything"
    for name in devices:
        states = log.values(name, "State")
        if name in INTEGRATORS and name not in worked:
            assert set(states) == {tango.DevState.ON}, f"{name} integrated nothing: {states}"
            continue
        busy = tango.DevState.MOVING if name == SIM else tango.DevState.RUNNING  # a Lambda server acquiring
        assert busy in states, f"{name}: no {busy} event during the scan: {states}"
        after = states[states.index(busy) :]
        assert tango.DevState.ON in after and states[-1] == tango.DevState.ON, f"{name}: {states}"
        assert stem in log.values(name, "currentScan"), (name, log.values(name, "currentScan"))
        assert log.values(name, "Status")[-1] == devices[name].status(), f"{name}: the last Status event is stale"
    final = {
        SIM: f"Wrote {stem}: {FRAMES} frames",
        STITCHER: f"{FRAMES} frames queued",
        MERGER: f"merged {FRAMES} frames, 0 failed; scan {stem}",
        **{n: f"integrated {devices[n].framesProcessed} frames" for n in INTEGRATORS},
    }
    for name, text in final.items():
        statuses = log.values(name, "Status")
        assert text in statuses[-1], (name, statuses)
        if name in INTEGRATORS:
            # Status followed the count: it began at 0 and each later event counts up to the device's total
            counts = [int(c) for s in statuses for c in re.findall(r"integrated (\d+) frames", s)]
            assert counts[0] == 0 and counts == sorted(counts), (name, statuses)
            assert counts[-1] == devices[name].framesProcessed, (name, statuses)
            assert (len(set(counts)) > 1) == (name in worked), (name, statuses)
        else:
            assert len(statuses) > 2, f"{name}: Status did not follow the scan"


def test_every_unit_parses_with_pint_and_internal_attributes_are_expert(scanned):
    registry = pint.UnitRegistry()
    for name, dev in scanned["devices"].items():
        for attr in dev.get_attribute_list():
            cfg = dev.get_attribute_config(attr)
            if cfg.unit not in ("", "No unit"):
                registry.parse_units(cfg.unit)  # raises UndefinedUnitError for what Taurus drops
            level = tango.DispLevel.EXPERT if (name, attr) in EXPERT else tango.DispLevel.OPERATOR
            assert cfg.disp_level == level, (name, attr, cfg.disp_level)
    stitcher = scanned["devices"][STITCHER]
    for command in ("ClaimWork", "RequeueFrames", "SetSettings"):  # what other devices call
        assert stitcher.command_query(command).disp_level == tango.DispLevel.EXPERT, command
    assert stitcher.command_query("Reintegrate").disp_level == tango.DispLevel.OPERATOR
    for name in INTEGRATORS:
        assert scanned["devices"][name].get_attribute_config("radialAxis").unit == "deg"
    for name in PIPELINE:  # never "Not initialised": the chain's unit before any write, as value and set-point
        before = scanned["unit_before"][name]
        assert (before.value, before.w_value) == ("2th_deg", "2th_deg"), name


def test_a_settings_write_shows_in_status_events_and_radial_axis_follows_the_unit(scanned):
    devices, log = scanned["devices"], scanned["log"]
    integrator = devices[INTEGRATORS[1]]
    with EventLog([(f"tango://{scanned['host']}/{n}", "unit") for n in PIPELINE]) as units:
        devices[STITCHER].unit = "q_nm^-1"  # written on the Stitcher: every device shows it as events
        for name in PIPELINE:
            wait_for(lambda name=name: units.values(name, "unit")[-1:] == ["q_nm^-1"], 10, f"{name}/unit event")
            assert units.values(name, "unit")[0] == "2th_deg"  # the subscription's first event: the value then
        for name in (*INTEGRATORS, MERGER):
            wait_for(
                lambda name=name: "q_nm^-1" in (log.values(name, "Status") or [""])[-1],
                10,
                f"a Status event of {name} naming the new unit: {log.values(name, 'Status')[-1:]}",
            )
    assert units.errors == []
    assert integrator.read_attribute("unit").w_value == "q_nm^-1"  # the set-point a form shows follows
    before = devices[MERGER].lastOutputFile
    done = {n: devices[n].framesProcessed for n in INTEGRATORS}
    devices[MERGER].Reintegrate(devices[SIM].lastWrittenFile)  # a new scan: integrated in q (1/nm)
    wait_for(lambda: devices[MERGER].lastOutputFile != before, 120, f"the reintegration:\n{devices[MERGER].status()}")
    worked = [n for n in INTEGRATORS if devices[n].framesProcessed > done[n]]
    assert sum(devices[n].framesProcessed - done[n] for n in worked) == FRAMES
    for name in worked:  # the axis of its last pattern is in 1/nm now, and says so
        assert devices[name].get_attribute_config("radialAxis").unit == "1/nm", name
        assert len(devices[name].radialAxis) == BINS
    devices[STITCHER].unit = "2th_deg"


def test_the_stitcher_memorized_what_was_written_so_a_restart_restores_it(scanned):
    """The values Tango stored for a restart (and an Init) are the ones written, not the set-point the
    publisher showed a moment before the write (seen once: maskPath memorized as '' while the chain
    integrated with the mask, so a restarted Stitcher dropped it)."""
    db = tango.Database(*scanned["host"].split(":"))
    stored = db.get_device_attribute_property(STITCHER, ["poniPath", "maskPath", "bins"])
    assert {name: list(props.get("__value", [])) for name, props in stored.items()} == {
        "poniPath": [str(scanned["poni"])],
        "maskPath": [str(scanned["mask"])],
        "bins": [str(BINS)],
    }
