"""Issue 9: the devices as Taurus shows them (Taurus' model API, no GUI), during a short live scan.

Taurus subscribes to change events and falls back to polling (every 3 s) where a device does not push
them; it turns each value into a pint Quantity, treating a unit it cannot parse as unitless. A panel
built on it shows a frozen or hatched value, or a bare number, wherever a device gets this wrong —
so every operator-facing attribute (display level OPERATOR) of every device is subscribed to here
before a scan, and the events received are checked afterwards: delivered as change events, values
that moved during the scan seen moving, readable with valid quality, units Taurus understands.

Taurus keeps one Tango factory per process: the attributes made here use full ``tango://host:port/``
names (the embedded database is not the process' TANGO_HOST) and are unsubscribed and dropped from
the factory at the end of the module, without ``ApiUtil.cleanup()`` (other modules keep using Tango).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import tango

from .helpers import SMALL_PONI, real_servers, wait_for

SIMULATOR, STITCHER, MERGER = "p02/xrd/lambda-sim", "p02/xrd/stitcher", "p02/xrd/merger"
#: what an operator looks at on every pipeline device (README; issue 9)
COMMON = (
    "State",
    "Status",
    "currentScan",
    "framesReceived",
    "framesProcessed",
    "framesFailed",
    "throughput",
    "latency",
    "lastOutputFile",
    "poniPath",
    "maskPath",
    "bins",
    "unit",
)
EXPECTED = {
    STITCHER: (*COMMON, "queueDepth"),
    "p02/xrd/integrator1": (*COMMON, "lastPattern", "radialAxis"),
    "p02/xrd/integrator2": (*COMMON, "lastPattern", "radialAxis"),
    MERGER: (*COMMON, "queueDepth"),
}
#: values a scan moves on every pipeline device: each must be seen changing, as events
MOVING = ("State", "Status", "currentScan", "framesReceived", "framesProcessed")
FRAMES = 40


@dataclass
class Recorder:
    """One Taurus listener per attribute: every event's type, value and quality, in order."""

    events: dict[str, list[tuple]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def listener(self, key: str):
        recorder = self

        class Listener:  # Taurus holds listeners weakly: the recorder keeps them alive
            def eventReceived(self, src, evt_type, evt_value):
                with recorder.lock:
                    value = getattr(evt_value, "rvalue", evt_value)
                    recorder.events[key].append((evt_type, _plain(value), getattr(evt_value, "quality", None)))

        return Listener()

    def of(self, key: str) -> list[tuple]:
        with self.lock:
            return list(self.events[key])


def _plain(value):
    """A comparable copy of an event's value (Quantity magnitudes, arrays as tuples)."""
    magnitude = getattr(value, "magnitude", value)
    if hasattr(magnitude, "tolist"):
        magnitude = magnitude.tolist()
    return tuple(magnitude) if isinstance(magnitude, list) else magnitude


@dataclass
class Subscribed:
    host: str
    attributes: dict[str, object]  # "device/attr" -> taurus TangoAttribute
    tango_config: dict[str, tango.AttributeInfoEx]
    recorder: Recorder
    stem: str
    output_file: str


def _operator_attributes(proxy: tango.DeviceProxy) -> dict[str, tango.AttributeInfoEx]:
    infos = proxy.attribute_list_query_ex()
    return {i.name: i for i in infos if i.disp_level == tango.DispLevel.OPERATOR}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A live chain, every operator attribute subscribed through Taurus, then one short scan."""
    import taurus
    from taurus.core.taurusbasetypes import TaurusEventType  # (also loads Taurus' Tango scheme)

    from tango_servers.demo import layout_for

    tmp: Path = tmp_path_factory.mktemp("taurus")
    specs, names = layout_for(tmp, integrators=2)
    tuned = {"Stitcher": {"FramesPerItem": ["2"]}, "Integrator": {"PollInterval": ["0.3"]}}
    specs = [replace(s, properties={**s.properties, **tuned.get(s.klass, {})}) for s in specs]
    (tmp / "cal").mkdir()
    (tmp / "cal" / "small.poni").write_text(SMALL_PONI)
    factory = taurus.Factory("tango")
    attributes: dict[str, object] = {}
    recorder = Recorder()
    listeners = {}
    with real_servers(tmp, specs) as host:
        try:
            proxies = {n: tango.DeviceProxy(f"tango://{host}/{n}") for n in (SIMULATOR, *EXPECTED)}
            proxies[STITCHER].poniPath = str(tmp / "cal" / "small.poni")
            proxies[STITCHER].bins = 50
            config = {}
            for device, proxy in proxies.items():
                for name, info in _operator_attributes(proxy).items():
                    key = f"{device}/{name}"
                    config[key] = info
                    attributes[key] = taurus.Attribute(f"tango://{host}/{key}")
                    listeners[key] = recorder.listener(key)
                    attributes[key].addListener(listeners[key])
            time.sleep(1.0)  # the first events of every subscription (the values before the scan)
            sim, merger = proxies[SIMULATOR], proxies[MERGER]
            sim.FrameNumbers, sim.FramesPerFile, sim.rate = FRAMES, 10, 20.0
            stem = sim.Start()
            wait_for(
                lambda: Path(merger.lastOutputFile).name.startswith(stem),
                timeout_s=120,
                what=f"the scan's merged file:\n{merger.status()}",
            )

            def settled() -> bool:  # back from RUNNING to ON ~2 s after their last work, and an event says so
                for device in EXPECTED:
                    key = f"{device}/State"
                    values = [e[1] for e in recorder.of(key) if e[0] == TaurusEventType.Change]
                    now = _plain(attributes[key].read(cache=False).rvalue)
                    if proxies[device].state() != tango.DevState.ON or values[-1:] != [now]:
                        return False
                return True

            wait_for(settled, timeout_s=30, what="every device ON and its last State change event saying so")
            yield Subscribed(host, attributes, config, recorder, stem, merger.lastOutputFile)
        finally:
            for key, attr in attributes.items():
                attr.removeListener(listeners[key])
                attr.cleanUp()
                factory.removeExistingAttribute(attr)
            for device in list(factory.getExistingDevices()):
                if host in device:
                    factory.removeExistingDevice(device)


def test_every_expected_attribute_is_operator_facing_and_internal_ones_are_expert(scan):
    for device, names in EXPECTED.items():
        missing = [n for n in names if f"{device}/{n}" not in scan.attributes]
        assert missing == [], f"{device}: not at OPERATOR display level (or absent): {missing}"
    encoded = [k for k, i in scan.tango_config.items() if i.data_type == tango.CmdArgType.DevEncoded]
    assert encoded == [], f"transport attributes an operator form cannot show, at OPERATOR level: {encoded}"


def test_every_operator_attribute_arrives_as_change_events_not_polling(scan):
    from taurus.core.taurusbasetypes import TaurusEventType

    problems = []
    for key, attr in scan.attributes.items():
        events = scan.recorder.of(key)
        kinds = [e[0] for e in events]
        if not attr.isUsingEvents():
            problems.append(f"{key}: Taurus polls it (no change events: {attr.getSubscriptionState()})")
        elif TaurusEventType.Periodic in kinds:
            problems.append(f"{key}: polled values among the events")
        elif TaurusEventType.Change not in kinds:
            problems.append(f"{key}: no change event received")
        errors = [e[1] for e in events if e[0] == TaurusEventType.Error]
        if errors:
            problems.append(f"{key}: error events {errors[:1]}")
    assert problems == [], "\n".join(problems)


def test_what_a_scan_moves_is_seen_moving_in_the_events(scan):
    from taurus.core.taurusbasetypes import TaurusEventType

    moving = {d: MOVING for d in EXPECTED}
    moving[MERGER] = (*MOVING, "lastOutputFile")
    for name in ("p02/xrd/integrator1", "p02/xrd/integrator2"):
        moving[name] = (*MOVING, "lastPattern")
    problems = []
    for device, names in moving.items():
        for name in names:
            key = f"{device}/{name}"
            values = [e[1] for e in scan.recorder.of(key) if e[0] == TaurusEventType.Change]
            distinct = list(dict.fromkeys(str(v)[:80] for v in values))
            if len(distinct) < 2:
                problems.append(f"{key}: {len(values)} change event(s) during the scan, values {distinct}")
    # not frozen: the last event shows what the device shows now, the scan over
    last = [f"{d}/{n}" for d in EXPECTED for n in ("State", "currentScan", "framesReceived", "framesProcessed")]
    for key in (*last, f"{MERGER}/Status", f"{MERGER}/lastOutputFile"):
        values = [e[1] for e in scan.recorder.of(key) if e[0] == TaurusEventType.Change]
        now = _plain(scan.attributes[key].read(cache=False).rvalue)
        if not values or values[-1] != now:
            problems.append(f"{key}: last event {values[-1:]} but the device shows {now!r}")
    assert problems == [], "\n".join(problems)
    merger_status = [e[1] for e in scan.recorder.of(f"{MERGER}/Status") if e[0] == TaurusEventType.Change]
    assert any(str(FRAMES) in str(s) for s in merger_status), merger_status


def test_every_operator_attribute_reads_with_a_valid_value(scan):
    from taurus.core.taurusbasetypes import AttrQuality

    problems = []
    for key, attr in scan.attributes.items():
        try:
            value = attr.read(cache=False)
        except Exception as exc:  # Taurus shows such an attribute hatched
            problems.append(f"{key}: read failed: {exc}")
            continue
        if value is None or value.rvalue is None:
            problems.append(f"{key}: no value")
        elif value.quality != AttrQuality.ATTR_VALID:
            problems.append(f"{key}: quality {value.quality!r}, value {_plain(value.rvalue)!r}")
    assert problems == [], "\n".join(problems)
    merger = scan.attributes[f"{MERGER}/lastOutputFile"].read(cache=False).rvalue
    assert merger == scan.output_file and Path(merger).name.startswith(scan.stem)
    assert scan.attributes[f"{MERGER}/framesProcessed"].read(cache=False).rvalue.magnitude == FRAMES
    assert scan.attributes[f"{STITCHER}/unit"].read(cache=False).rvalue == "2th_deg"


def test_units_are_ones_taurus_understands(scan):
    from taurus.core.units import UR

    problems = []
    for key, attr in scan.attributes.items():
        unit = scan.tango_config[key].unit
        if unit in ("", "No unit", tango.constants.UnitNotSpec):
            continue
        rvalue = attr.read(cache=False).rvalue
        if not hasattr(rvalue, "units"):
            problems.append(f"{key}: unit {unit!r} on a value Taurus gives without units ({type(rvalue).__name__})")
        elif rvalue.units == UR.dimensionless:
            problems.append(f"{key}: Tango unit {unit!r} is unknown to Taurus (shown unitless)")
    for name in ("p02/xrd/integrator1", "p02/xrd/integrator2"):
        axis = scan.attributes[f"{name}/radialAxis"].read(cache=False).rvalue
        if getattr(axis, "units", UR.dimensionless) == UR.dimensionless:
            problems.append(f"{name}/radialAxis: no unit (a plot's x axis without a label)")
        elif axis.units != UR.deg:  # the chain's unit is 2th_deg
            problems.append(f"{name}/radialAxis: unit {axis.units} for a 2th_deg chain")
    for key in (f"{MERGER}/throughput", f"{MERGER}/latency"):
        q = scan.attributes[key].read(cache=False).rvalue
        expected = UR.Hz if key.endswith("throughput") else UR.s
        if not hasattr(q, "units") or q.units.dimensionality != expected.dimensionality:
            problems.append(f"{key}: {q!r} not in units of {expected}")
    assert problems == [], "\n".join(problems)


def test_a_setting_written_through_taurus_reaches_every_device_as_events(scan):
    """What a Taurus form does: write ``bins`` on one Integrator; every device's ``bins`` listener
    receives the chain's new value, and a Status that shows the settings shows the new ones."""
    from taurus.core.taurusbasetypes import TaurusEventType

    def seen(key: str, check) -> bool:
        return any(e[0] == TaurusEventType.Change and check(e[1]) for e in scan.recorder.of(key))

    showing = [d for d in EXPECTED if seen(f"{d}/Status", lambda v: "50 bins" in str(v))]
    assert set(showing) >= {"p02/xrd/integrator1", "p02/xrd/integrator2", MERGER}, showing
    scan.attributes["p02/xrd/integrator1/bins"].write(64)
    for device in EXPECTED:
        wait_for(lambda d=device: seen(f"{d}/bins", lambda v: v == 64), timeout_s=10, what=f"{device}/bins event 64")
    for device in showing:
        wait_for(
            lambda d=device: seen(f"{d}/Status", lambda v: "64 bins" in str(v)),
            timeout_s=10,
            what=f"{device}/Status showing 64 bins: {scan.recorder.of(device + '/Status')[-1:]}",
        )
