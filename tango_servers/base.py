"""What every pipeline device shares: counters, state/status reporting, event helpers.

A device here only declares its Tango interface and forwards to a stage from ``pipeline_core``;
the stage does the work on its own thread and reports back through callbacks, which this base turns
into State, Status and change events. The pieces live in their own modules: the counters and the
change events of everything shown (:mod:`.counter_attributes`), the subscriptions upstream
(:mod:`.subscriptions`), the problems shown in Status (:mod:`.status_log`) and SIGHUP handling
(:mod:`.hangup`).
"""

from __future__ import annotations

import logging
import math
import time

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property

from pipeline_core.live.deadline import STOP_BUDGET_S, Deadline

from .change_events import ChangePublisher, read_value
from .counter_attributes import CounterAttributes, ThroughputWindow
from .hangup import stop_on_hangup
from .status_log import UPSTREAM_ALARM_AFTER_S, StatusLog, UpstreamLinks
from .subscriptions import EventHandler, EventSubscriptions

log = logging.getLogger(__name__)

#: what every pipeline device pushes change events for (subclasses watch more)
EVENTED = (
    "framesReceived",
    "framesProcessed",
    "framesFailed",
    "throughput",
    "latency",
    "currentScan",
    "lastOutputFile",
    "upstreamConnected",
    "outputDirectory",  # constant: pushed once, so Taurus subscribes instead of polling it
    "State",
    "Status",
)
#: seconds a device stays RUNNING after its last unit of work (a scan's parts come every few seconds)
BUSY_AFTER_WORK_S = 2.0


class PipelineDevice(CounterAttributes, Device):
    """Base class: operator-facing counters, State/Status and a thread-safe error log.

    Everything in :data:`EVENTED` (and what subclasses ``publisher.watch``) is pushed as a change
    event whenever its value changes, by the device's :class:`ChangePublisher`: stages call
    :meth:`push_progress` after each unit of work, commands and writes wake it, and it compares every
    half second anyway, so State going back to ON or a write on another device reaches event-driven
    clients (Taurus) too."""

    OutputDirectory = device_property(dtype=str, default_value="processed", doc="where result files are written")
    UpstreamAlarmAfter = device_property(
        dtype=float,
        default_value=UPSTREAM_ALARM_AFTER_S,
        doc="seconds an upstream device may be unreachable before State is ALARM; a link lost and back "
        "sooner (a restart takes a few seconds) is a note in Status, not an alarm",
    )

    def init_device(self) -> None:
        super().init_device()
        stop_on_hangup()
        self.status_log = StatusLog()
        self._last_work = float("-inf")
        self.publisher = ChangePublisher(self, before=self.before_publish)
        self.publisher.watch(*EVENTED)
        self.subscriptions = EventSubscriptions(self.report_error, self.set_fault, UpstreamLinks(self.upstream_bound()))
        self.throughput_window = ThroughputWindow()
        self._running = False
        self._t_start = time.monotonic()
        self.publisher.start()  # reads that fail while the subclass builds its stage are retried next period

    def delete_device(self) -> None:
        """Server stop (SIGINT/TERM/HUP) or Init: every thread of the device ends within one deadline
        (:func:`stop_deadline`); one that does not is named in the log and left behind, never waited
        for beyond it."""
        deadline = self.stop_deadline()
        try:
            self.publisher.stop(deadline.left())
            self.subscriptions.close()
            stage = getattr(self, "stage", None)
            if stage is not None:  # every pipeline device forwards to a core stage with its own thread
                stage.stop(deadline)
        finally:
            self._stop_deadline = None  # the next Init's stop gets a whole budget again
        log.info("%s stopped in %.1f s", self.get_name(), deadline.seconds - deadline.left())
        super().delete_device()

    def stop_deadline(self) -> Deadline:
        """The deadline of the stop under way: made by the first caller (a subclass's delete_device,
        which stops its own threads first), shared by every join of that stop."""
        if getattr(self, "_stop_deadline", None) is None:
            self._stop_deadline = Deadline(STOP_BUDGET_S)
        return self._stop_deadline

    # -- events in --------------------------------------------------------------------------------
    def subscribe(self, trl: str, attr: str, handler: EventHandler) -> None:
        """Subscribe to ``trl/attr`` change events without blocking init (see :class:`EventSubscriptions`)."""
        self.subscriptions.subscribe(trl, attr, handler)

    def guarded(self, what: str, handler: EventHandler) -> EventHandler:
        """Wrap an event callback: errors are logged and shown in Status, never swallowed by cppTango."""
        return self.subscriptions.guarded(what, handler)

    @attribute(
        dtype=bool,
        label="Upstream connected",
        doc="every link upstream delivers: event subscriptions, an Integrator's claims (wait for True before a scan)",
    )
    def upstreamConnected(self) -> bool:
        return self.subscriptions.connected

    # -- state ------------------------------------------------------------------------------------
    def report_error(self, message: str) -> None:
        """Called from any thread by stages: the device keeps serving, Status says what failed."""
        log.warning("%s: %s", self.get_name(), message)
        self.status_log.report(message)
        self.publisher.wake()

    def upstream_bound(self) -> float:
        """``UpstreamAlarmAfter`` if it is a number of seconds > 0; else the default, and Status says why."""
        bound = float(self.UpstreamAlarmAfter)
        if math.isfinite(bound) and bound > 0:
            return bound
        self.report_error(f"UpstreamAlarmAfter {bound!r}: expected seconds > 0; using {UPSTREAM_ALARM_AFTER_S:g} s")
        return UPSTREAM_ALARM_AFTER_S

    def set_fault(self, message: str | None) -> None:
        self.status_log.fault = message
        self.publisher.wake()

    def dev_state(self) -> DevState:
        if self.status_log.fault:
            return DevState.FAULT
        return self.status_log.state(self.alarms(), self.is_busy())

    def dev_status(self) -> str:
        links = self.subscriptions.links
        return self.status_log.status(self.describe(), self.alarms(), links.waiting(), links.notes())

    def alarms(self) -> str | None:
        """The device's own alarm condition and the upstream links out for too long, or None."""
        found = [a for a in (self.alarm(), self.subscriptions.links.alarm()) if a]
        return "; ".join(found) or None

    def before_publish(self) -> None:
        """Called on the publisher's thread before each comparison (e.g. to follow a unit)."""

    def published_value(self, name: str):
        """The value of ``name`` the publisher compares and pushes (a read; subclasses may use a snapshot)."""
        return read_value(self, name)

    def is_busy(self) -> bool:
        """Worked within the last :data:`BUSY_AFTER_WORK_S` (RUNNING); stages may say more."""
        return self.recently_worked()

    def recently_worked(self, seconds: float = BUSY_AFTER_WORK_S) -> bool:
        return time.monotonic() - self._last_work < seconds

    def alarm(self) -> str | None:
        """A condition that needs the operator's eye now (e.g. a queue near its bound), else None."""
        return None

    def describe(self) -> str:
        return "ready"

    @command(doc_in="", doc_out="", display_level=tango.DispLevel.OPERATOR)
    def ClearErrors(self) -> None:
        """Acknowledge the problems and notes shown in Status (State goes back from ALARM, unless a
        condition still holds: a queue near its bound, an upstream still out too long)."""
        self.status_log.clear()
        self.subscriptions.links.clear_notes()
        self.publisher.wake()

    @attribute(
        dtype=str, label="Output directory", doc="where this stage writes result files", access=AttrWriteType.READ
    )
    def outputDirectory(self) -> str:
        return str(self.OutputDirectory)
