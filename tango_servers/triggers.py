"""The Stitcher's triggers: how it learns that new parts are on disk (its ``Trigger`` property).

Each is a small component with ``start()``, ``stop()`` and ``describe()``, made by
:func:`make_trigger` from the device's properties, and each feeds the stage the same way:

- ``lambda``: :class:`LambdaTrigger` reads a Lambda server's attributes (``DetectorDevice``) and hands
  them to :class:`~pipeline_core.live.triggers.lambda_follow.LambdaFollower`, which says which parts
  are written. It polls every ``DetectorPollPeriod`` seconds and, where the server pushes change
  events on State and LatestImageNumber, also reads at once when one arrives -- events for speed,
  polling so that nothing depends on them.
- ``watch``: :class:`~pipeline_core.live.triggers.watch.DirectoryWatch` on ``WatchDirectories``.
- ``file-attribute``: :class:`FileAttributeTrigger`, change events of ``DetectorAttribute`` carrying
  each written module file's path (our simulator's ``lastWrittenFile``).

Tango's event threads only set a flag; the reads and the stage calls happen on the trigger's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import tango

from pipeline_core.errors import ConfigError
from pipeline_core.live.deadline import Deadline, as_deadline
from pipeline_core.live.triggers import check_trigger
from pipeline_core.live.triggers.lambda_follow import LAMBDA_ATTRIBUTES, LambdaFollower, LambdaSnapshot
from pipeline_core.live.triggers.watch import DirectoryWatch, watch_config

log = logging.getLogger(__name__)

#: event errors of a server that pushes no change events for an attribute: poll instead
NOT_PUSHED = {"API_AttributePollingNotStarted", "API_EventPropertiesNotSet", "API_AttributeNotDataReadyEnabled"}
#: what a Lambda server must have for Trigger=lambda (besides SaveFileName or FilePrefix)
REQUIRED_ATTRIBUTES = ("State", "SaveFilePath", "FramesPerFile", "FrameNumbers", "LatestImageNumber")
#: seconds between attempts to subscribe while the detector server is not reachable
RESUBSCRIBE_S = 10.0
#: seconds a trigger's stop waits for its thread when the device gives no deadline
TRIGGER_STOP_S = 5.0


class Trigger(Protocol):
    def start(self) -> None: ...
    def stop(self, deadline: Deadline | None = None) -> bool: ...
    def describe(self) -> str: ...


class FileAttributeTrigger:
    """Change events of ``trl/attr`` carry each written module file's path (today's announcement)."""

    def __init__(self, device: Any, trl: str, attr: str):
        self._device, self._trl, self._attr = device, trl, attr

    def start(self) -> None:
        if self._trl:
            self._device.subscribe(self._trl, self._attr, self._announced)

    def stop(self, deadline: Deadline | None = None) -> bool:
        """Subscriptions are the device's: closed in its delete_device."""
        return True

    def _announced(self, event) -> None:
        path = event.attr_value.value if event.attr_value is not None else ""
        if self._device.taking_announcements() and path:
            self._device.stage.announce(path)

    def describe(self) -> str:
        if not self._trl:
            return "listening to nothing (no DetectorDevice property)"
        return f"listening to {self._trl}/{self._attr}"


class LambdaTrigger:
    """Follows a Lambda Tango server's acquisitions (see the module docstring)."""

    def __init__(self, device: Any, trl: str, poll_s: float):
        if not trl:
            raise ConfigError("Trigger lambda needs DetectorDevice: the TRL of the Lambda Tango server")
        if not 0.01 <= poll_s <= 60:
            raise ConfigError(f"DetectorPollPeriod = {poll_s} s is out of range; expected 0.01 to 60 s")
        self._device, self._trl, self._poll_s = device, trl, poll_s
        self._follower = LambdaFollower()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: list[tuple[tango.DeviceProxy, int]] = []
        self._pushed: set[str] = set()  # attributes the server pushes change events for
        self._next_subscribe = 0.0
        self._proxy: tango.DeviceProxy | None = None
        self._present: list[str] = list(LAMBDA_ATTRIBUTES)
        self.parts_announced = 0
        self.last_problem = ""

    @property
    def _what(self) -> str:
        return f"{self._trl} (Lambda)"

    def start(self) -> None:
        self._device.subscriptions.mark_waiting(self._what, f"reading {self._trl} ...")
        self._thread = threading.Thread(target=self._run, name="xrd-lambda-trigger", daemon=True)
        self._thread.start()

    def stop(self, deadline: Deadline | None = None) -> bool:
        """End the trigger's thread within ``deadline`` (it may be in a read of the Lambda server: at
        most its client timeout), then unsubscribe; False when the thread still runs (logged)."""
        self._stop.set()
        self._wake.set()
        ended = as_deadline(deadline, TRIGGER_STOP_S).join(self._thread, f"following {self._trl}")
        for proxy, event_id in self._events:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._events.clear()
        return ended

    def describe(self) -> str:
        how = (
            f"change events + polling every {self._poll_s:g} s"
            if self._pushed
            else f"polling every {self._poll_s:g} s"
        )
        acq = self._follower.acquisition
        now = f"acquiring {acq}" if acq else "detector idle"
        return f"following Lambda {self._trl} ({how}; {now}; {self.parts_announced} parts announced)"

    # -- the trigger's thread -----------------------------------------------------------------------
    def _run(self) -> None:
        with tango.EnsureOmniThread():
            while not self._stop.is_set():
                self._wake.wait(self._poll_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self._look()
                except Exception as exc:  # a bug must not end the thread: said in Status, then on
                    log.exception("following %s failed", self._trl)
                    self._device.report_error(f"following {self._trl} failed: {exc}")

    def _look(self) -> None:
        snap = self._read()
        if snap is None:
            return
        self._subscribe_once()
        for due in self._follower.update(snap):
            if self._device.taking_announcements():
                self.parts_announced += 1
                self._device.stage.announce_part(due)
            else:
                log.info("part %d of %s written while stopped: not taken", due.part, due.stem)
        self._device.publisher.wake()

    def _read(self) -> LambdaSnapshot | None:
        """One snapshot of the server's attributes, or None (said in Status) when it cannot be read."""
        try:
            if self._proxy is None:
                proxy = tango.DeviceProxy(self._trl)
                self._present = self._check_attributes(proxy)
                if not self._present:
                    self._stop.set()  # no Lambda server: FAULT says why, nothing to follow
                    self._device.subscriptions.mark_delivering(self._what)  # reached; the fault is the news
                    return None
                self._proxy = proxy
            values = self._proxy.read_attributes(self._present)
        except tango.DevFailed as exc:
            values, reason = [], exc.args[0].desc.strip().splitlines()[0]
        else:  # half a snapshot would look like an acquisition that ended: wait for a whole one
            failed = [a.name for a in values if a.has_failed or a.value is None]
            reason = f"attribute(s) {', '.join(failed)} could not be read" if failed else ""
        if reason:
            self._device.subscriptions.mark_waiting(
                self._what, f"cannot read {self._trl} ({reason}); retrying every {self._poll_s:g} s"
            )
            return None
        read = {a.name.lower(): a.value for a in values}
        self._device.subscriptions.mark_delivering(self._what)
        state, path, name, prefix, start_num, per_file, frames, latest = (
            read.get(a.lower()) for a in LAMBDA_ATTRIBUTES
        )
        return LambdaSnapshot(
            str(state), str(path or ""), str(name or ""), str(prefix or ""), int(start_num or 0), int(per_file or 0),
            int(frames or 0), int(latest or 0),
        )  # fmt: skip

    def _check_attributes(self, proxy: tango.DeviceProxy) -> list[str]:
        """The Lambda attributes this server has; a fault naming what lacks when it is no Lambda server
        (a wrong DetectorDevice must not look like a detector that never acquires)."""
        have = {a.lower() for a in proxy.get_attribute_list()}
        missing = [a for a in REQUIRED_ATTRIBUTES if a.lower() not in have]
        if not ({"savefilename", "fileprefix"} & have):
            missing.append("SaveFileName or FilePrefix")
        if missing:
            self._device.set_fault(
                f"DetectorDevice {self._trl} has no attribute {', '.join(missing)}: is it a Lambda server? "
                f"Trigger=lambda reads {', '.join(LAMBDA_ATTRIBUTES)}"
            )
            return []
        return [a for a in LAMBDA_ATTRIBUTES if a.lower() in have]

    def _subscribe_once(self) -> None:
        """Subscribe to State and LatestImageNumber once the server answers; a server that pushes none
        is polled only (no error: that is how most Lambda servers are)."""
        if self._pushed or self._events or time.monotonic() < self._next_subscribe or self._proxy is None:
            return
        self._next_subscribe = time.monotonic() + RESUBSCRIBE_S
        for attr in ("State", "LatestImageNumber"):
            try:
                event_id = self._proxy.subscribe_event(attr, tango.EventType.CHANGE_EVENT, self._event)
            except tango.DevFailed as exc:
                reason = exc.args[0].reason
                if reason not in NOT_PUSHED:
                    log.info("no change events from %s/%s (%s): polling", self._trl, attr, reason)
                continue
            self._events.append((self._proxy, event_id))
            self._pushed.add(attr)
        if not self._pushed:
            self._next_subscribe = float("inf")  # the server pushes nothing: polling it is

    def _event(self, event) -> None:
        """Tango's event thread: only wake the trigger's thread (it reads everything at once)."""
        if not event.err:
            self._wake.set()


class WatchTrigger:
    """The data directories watched for complete module files."""

    def __init__(self, device: Any, watch: DirectoryWatch):
        self._device, self._watch = device, watch

    def start(self) -> None:
        self._watch.start()

    def stop(self, deadline: Deadline | None = None) -> bool:
        return self._watch.stop(deadline)

    def describe(self) -> str:
        return self._watch.describe()


def make_trigger(device: Any) -> Trigger:
    """The trigger the device's ``Trigger`` property names, built from its properties (ConfigError
    naming the property for a bad value)."""
    kind = check_trigger(device.Trigger)
    if kind == "lambda":
        if not device.DetectorDevice:  # e.g. a Stitcher for reintegrations only: no detector to follow
            return FileAttributeTrigger(device, "", "")
        return LambdaTrigger(device, device.DetectorDevice, float(device.DetectorPollPeriod))

    if kind == "watch":
        config = watch_config(
            device.WatchDirectories, device.DataRoots, device.WatchStableTime, device.WatchSweepPeriod,
            device.WatchBacklog,
        )  # fmt: skip

        def on_file(path: str) -> None:
            if device.taking_announcements():
                device.stage.announce(path)

        return WatchTrigger(device, DirectoryWatch(config, on_file, device.report_error))
    return FileAttributeTrigger(device, device.DetectorDevice, device.DetectorAttribute)
