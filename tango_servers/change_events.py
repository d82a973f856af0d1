"""Change events of everything a device shows (State, Status, counters, settings, ...), from one place.

One :class:`ChangePublisher` per device compares each watched attribute with the value it pushed
last and pushes what changed, from its own thread — woken after each unit of stage work, and every
``period_s`` so that changes nobody reports (State back to ON, a settings write on another device)
are pushed too. Event-driven clients (Taurus subscribes to everything it shows) then never show a
frozen value, and no attribute can be declared as evented and forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tango
from tango import AttrWriteType

log = logging.getLogger(__name__)

#: seconds between the publisher's comparisons when nothing wakes it
PUBLISH_PERIOD_S = 0.5


def read_value(device: Any, name: str) -> Any:
    """What a client reading ``name`` gets now (State/Status included), without going through Tango."""
    if name == "State":
        return device.dev_state()
    if name == "Status":
        return device.dev_status()
    return getattr(type(device), name).fget(device)


def follow_set_point(device: Any, name: str, value: Any) -> None:
    """Make the set-point of READ_WRITE ``name`` the value in force, so a client (a Taurus form, Jive)
    shows it rather than "Not initialised" before anybody wrote it here (e.g. written on another device)."""
    attrs = device.get_device_attr()
    if attrs.get_attr_by_name(name).get_writable() != AttrWriteType.READ_WRITE:
        return
    try:
        attrs.get_w_attr_by_name(name).set_write_value(value)
    except tango.DevFailed:  # e.g. bins 0 (not set yet) is below the minimum a client may write
        pass


def _same(a: Any, b: Any, exact: bool = False) -> bool:
    """Equal for a client: arrays element by element, floats within 0.1 % (a slowly drifting
    busyFraction or throughput is not an event every period) unless ``exact`` (a measured result,
    e.g. the pressure: the last event must be the value a read gives, not one 0.1 % away)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b if exact else math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):  # NaN equals NaN (a pressure trace's gaps)
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f")
    return type(a) is type(b) and a == b


class ChangePublisher:
    """Pushes a change event for every watched attribute whose value differs from the one pushed last.

    One mechanism for all of a device's change events, so none can be declared and forgotten: a
    watched attribute is read (by its read method, ``dev_state``/``dev_status`` for State/Status) on
    the publisher's own omniORB thread, never on an event callback's or a stage's thread, which only
    :meth:`wake` it. State and Status are compared last, after the values they summarise (e.g. the
    settings an Integrator reads from the Stitcher) were refreshed. A READ_WRITE attribute's set-point
    follows its value, so a client shows the value in force, not "Not initialised".
    """

    def __init__(self, device: Any, period_s: float = PUBLISH_PERIOD_S, before: Callable[[], None] | None = None):
        self._device = device
        self._period_s = period_s
        #: called at the start of each comparison (e.g. to update an attribute's unit)
        self._before = before
        self._names: list[str] = []
        self._exact: set[str] = set()
        self._last: dict[str, Any] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: guards _waiting against stop(): a publisher waiting for the monitor is not waited for
        self._flag = threading.Lock()
        self._waiting = False

    def watch(self, *names: str, exact: bool = False) -> None:
        """Declare ``names`` as pushed by the server (change events) and push them when they change
        (``exact``: any change of a float, not only one beyond 0.1 %)."""
        if exact:
            self._exact.update(names)
        for name in names:
            if name not in self._names:
                self._device.set_change_event(name, True, False)
                self._names.append(name)

    @property
    def names(self) -> list[str]:
        """The watched attributes, State and Status last."""
        return [n for n in self._names if n not in ("State", "Status")] + [
            n for n in ("State", "Status") if n in self._names
        ]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"xrd-events-{self._device.get_name()}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Compare now (from any thread; returns at once)."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._flag:
            self._stop.set()
            waiting = self._waiting  # for the device's monitor, which our caller (Init, shutdown) may hold
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread() and not waiting:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        with tango.EnsureOmniThread():
            while not self._stop.is_set():
                self._wake.wait(self._period_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.publish()

    def read(self, name: str) -> Any:
        """The value to compare and push: the device's ``published_value`` if it has one, else a read."""
        published = getattr(self._device, "published_value", None)
        return published(name) if published is not None else read_value(self._device, name)

    def publish(self) -> None:
        """Push every watched attribute that changed since its last push (on the publisher's thread)."""
        if self._before is not None:
            try:
                self._before()
            except Exception:
                log.debug("%s: before-publish hook failed", self._device.get_name(), exc_info=True)
        for name in self.names:
            try:
                with self._device_monitor() as live:
                    if not live:
                        return
                    self._publish_one(name)
            except tango.DevFailed:  # the monitor not had within Tango's timeout (a long request): next time
                log.debug("%s/%s: device busy, not compared now", self._device.get_name(), name, exc_info=True)

    @contextlib.contextmanager
    def _device_monitor(self) -> Iterator[bool]:
        """Hold the device's monitor, as a client's request does, while one attribute is read, its
        set-point followed and its event pushed. Without it the set-point could be changed in the middle
        of a client's write of that attribute: the write would then be memorized (or forwarded) with
        the value shown before it, not the one written. Yields False once :meth:`stop` was called."""
        with self._flag:
            stopped = self._stop.is_set()
            self._waiting = not stopped
        if stopped:
            yield False
            return
        try:
            with tango.AutoTangoMonitor(self._device):  # pytango releases the GIL while it waits
                with self._flag:
                    self._waiting = False
                yield not self._stop.is_set()
        finally:
            with self._flag:
                self._waiting = False

    def _publish_one(self, name: str) -> None:
        try:
            value = self.read(name)
        except Exception:  # e.g. the stage not built yet, the Stitcher not reachable: next time
            log.debug("%s/%s: not readable now", self._device.get_name(), name, exc_info=True)
            return
        if name in self._last and _same(self._last[name], value, exact=name in self._exact):
            return
        self._last[name] = value  # a push that fails is not retried with the same value (no log flood)
        try:
            self._follow_set_point(name, value)
            self._device.push_change_event(name, value)
        except (tango.DevFailed, TypeError, ValueError):
            log.warning("%s/%s: change event not pushed", self._device.get_name(), name, exc_info=True)

    def _follow_set_point(self, name: str, value: Any) -> None:
        """State/Status: the value Tango pushes is the device's stored one (set it); a READ_WRITE
        attribute: its set-point, so a client shows the value in force rather than "Not initialised"."""
        if name == "State":
            self._device.set_state(value)
            return
        if name == "Status":
            self._device.set_status(value)
            return
        follow_set_point(self._device, name, value)
