"""What every pipeline device shares: counters, state/status reporting, event helpers.

A device here only declares its Tango interface and forwards to a stage from ``pipeline_core``;
the stage does the work on its own thread and reports back through callbacks, which this base turns
into State, Status and change events.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import threading
import time

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property

import pipeline_core.worker

# Threads the stages create call Tango (events, proxies): they must be omni threads.
pipeline_core.worker.worker_context = tango.EnsureOmniThread

log = logging.getLogger(__name__)

#: How many recent problems Status shows.
STATUS_ERRORS = 5
#: Event errors that mean "upstream not (yet) reachable": shown in Status, but not an ALARM.
TRANSIENT_EVENT_ERRORS = {
    "API_EventTimeout",
    "API_CantConnectToDevice",
    "API_DeviceNotExported",
    "API_ZmqFailed",
    "API_CorbaException",
    "API_DServerClassNotInitialised",  # upstream server still starting
}


#: The watcher thread and the wakeup socket Python's handler writes to (kept for the process's life).
_hangup_watch: tuple[threading.Thread, socket.socket] | None = None


def stop_on_hangup() -> None:
    """Make SIGHUP shut this server down exactly as SIGTERM does (once per process, main thread).

    cppTango blocks every signal in every thread and waits (``sigwait``) on its own thread for INT,
    TERM, QUIT and HUP: the first three run a clean shutdown (``delete_device`` of each device,
    exit 0), but HUP is dropped unconditionally (``thsig.cpp``: ``if (signo == SIGHUP) continue;``),
    and a device's ``register_signal(SIGHUP)`` handler is never called. Measured with pytango
    10.3.1: a server sent SIGHUP still ran 20 s later. A closed terminal or a service manager
    sends HUP, so we take it before cppTango can: the main thread (which the kernel prefers for a
    signal sent to the process) unblocks HUP with Python's handler, whose C part writes the signal
    number to a wakeup socket; a watcher thread reads it and sends us SIGTERM, which cppTango
    handles. One shutdown path, the one TERM already takes.

    Called from ``init_device``: the first call runs in the main thread during server start-up,
    after cppTango set its signal mask; later calls (``Init``, other devices) do nothing.
    """
    global _hangup_watch
    if _hangup_watch is not None or threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        while data := reader.recv(64):
            if signal.SIGHUP in data:
                log.warning("SIGHUP: shutting the server down as on SIGTERM")
                os.kill(os.getpid(), signal.SIGTERM)

    _hangup_watch = (threading.Thread(target=watch, name="xrd-sighup", daemon=True), writer)
    _hangup_watch[0].start()
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: None)  # the work is done by the watcher
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


class PipelineDevice(Device):
    """Base class: operator-facing counters, State/Status and a thread-safe error log."""

    OutputDirectory = device_property(dtype=str, default_value="processed", doc="where result files are written")

    def init_device(self) -> None:
        super().init_device()
        stop_on_hangup()
        self._errors: collections.deque[str] = collections.deque(maxlen=STATUS_ERRORS)
        self._errors_lock = threading.Lock()
        self._fault: str | None = None
        self._running = False
        self._t_start = time.monotonic()
        self._rate_window: collections.deque[tuple[float, int]] = collections.deque(maxlen=50)
        self._subscriptions: list[tuple[tango.DeviceProxy, int]] = []
        self._upstream: dict[str, str] = {}
        for name in (
            "framesReceived",
            "framesProcessed",
            "framesFailed",
            "latency",
            "currentScan",
            "lastOutputFile",
            "State",
            "Status",
        ):
            self.set_change_event(name, True, False)

    def delete_device(self) -> None:
        for proxy, event_id in self._subscriptions:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._subscriptions.clear()
        stage = getattr(self, "stage", None)
        if stage is not None:  # every pipeline device forwards to a core stage with its own thread
            stage.stop()
        super().delete_device()

    # -- events in --------------------------------------------------------------------------------
    def subscribe(self, trl: str, attr: str, handler) -> None:
        """Subscribe to a change event upstream without blocking init (works before it is exported).

        Until the first good event arrives the link counts as not connected (``upstreamConnected``
        is False and Status says so): events pushed before that are not received, so a client that
        starts a scan should wait for it. Tango retries a failed subscription every ~10 s.
        """
        what = f"{trl}/{attr}"
        self._upstream[what] = f"subscribing to {what} ..."
        try:
            proxy = tango.DeviceProxy(trl)
            event_id = proxy.subscribe_event(
                attr, tango.EventType.CHANGE_EVENT, self.guarded(what, handler), sub_mode=tango.EventSubMode.AsyncRead
            )
        except tango.DevFailed as exc:  # e.g. a TRL the database does not know: the device cannot work
            self.set_fault(f"cannot subscribe to {what}: {exc.args[0].desc.strip()}")
            return
        self._subscriptions.append((proxy, event_id))

    @attribute(
        dtype=bool,
        label="Upstream connected",
        doc="every upstream event subscription delivers events (wait for True before starting a scan)",
    )
    def upstreamConnected(self) -> bool:
        return not self._upstream

    def guarded(self, what: str, handler):
        """Wrap an event callback: errors are logged and shown in Status, never swallowed by cppTango."""

        def callback(event) -> None:
            try:
                if event.err:
                    reason = event.errors[0].reason if event.errors else "unknown"
                    if reason in TRANSIENT_EVENT_ERRORS:  # upstream not up yet / restarting: Tango re-subscribes
                        self._upstream[what] = f"waiting for {what} ({reason}); Tango retries every ~10 s"
                    else:
                        self.report_error(f"{what}: event error {reason}")
                    return
                self._upstream.pop(what, None)
                handler(event)
            except Exception as exc:
                log.exception("%s callback failed", what)
                self.report_error(f"{what}: {exc}")

        return callback

    # -- state ------------------------------------------------------------------------------------
    def report_error(self, message: str) -> None:
        """Called from any thread by stages: the device keeps serving, Status says what failed."""
        log.warning("%s: %s", self.get_name(), message)
        stamp = time.strftime("%H:%M:%S")
        with self._errors_lock:
            self._errors.append(f"{stamp} {message}")

    def set_fault(self, message: str | None) -> None:
        self._fault = message

    def dev_state(self) -> DevState:
        if self._fault:
            return DevState.FAULT
        if self.alarm():
            return DevState.ALARM
        with self._errors_lock:
            if self._errors:
                return DevState.ALARM
        return DevState.RUNNING if self.is_busy() else DevState.ON

    def dev_status(self) -> str:
        lines = [self.describe()] + sorted(self._upstream.values())
        if self.alarm():
            lines.insert(0, f"ALARM: {self.alarm()}")
        if self._fault:
            lines.insert(0, f"FAULT: {self._fault}")
        with self._errors_lock:
            if self._errors:
                lines.append("Recent problems (ClearErrors to acknowledge):")
                lines += [f"  {e}" for e in self._errors]
        return "\n".join(lines)

    def is_busy(self) -> bool:
        return False

    def alarm(self) -> str | None:
        """A condition that needs the operator's eye now (e.g. a queue near its bound), else None."""
        return None

    def describe(self) -> str:
        return "ready"

    @command(doc_in="", doc_out="", display_level=tango.DispLevel.OPERATOR)
    def ClearErrors(self) -> None:
        """Acknowledge the problems shown in Status (State goes back from ALARM)."""
        with self._errors_lock:
            self._errors.clear()

    # -- counters shared by every stage -----------------------------------------------------------
    def counters(self):
        """The stage's counters dataclass (frames_received, frames_processed, frames_failed)."""
        raise NotImplementedError

    def push_progress(self) -> None:
        """Push the counters as change events (called by stages after each unit of work)."""
        c = self.counters()
        for name, value in (
            ("framesReceived", c.frames_received),
            ("framesProcessed", c.frames_processed),
            ("framesFailed", c.frames_failed),
        ):
            self.push_change_event(name, int(value))
        for name in ("latency", "currentScan"):  # every stage declares both; README promises their events
            self.push_change_event(name, getattr(type(self), name).fget(self))

    @attribute(
        dtype=int,
        label="Frames received",
        unit="frames",
        format="%d",
        min_value=0,
        doc="frames announced to this stage since the server started",
    )
    def framesReceived(self) -> int:
        return int(self.counters().frames_received)

    @attribute(
        dtype=int,
        label="Frames processed",
        unit="frames",
        format="%d",
        min_value=0,
        doc="frames this stage has finished (stitched / integrated / merged)",
    )
    def framesProcessed(self) -> int:
        return int(self.counters().frames_processed)

    @attribute(
        dtype=int,
        label="Frames failed",
        unit="frames",
        format="%d",
        min_value=0,
        doc="frames that could not be processed; Status and the result file say why",
    )
    def framesFailed(self) -> int:
        return int(self.counters().frames_failed)

    @attribute(
        dtype=float,
        label="Throughput",
        unit="frames/s",
        format="%.1f",
        min_value=0,
        doc="frames processed per second over the last few seconds",
    )
    def throughput(self) -> float:
        now = time.monotonic()
        self._rate_window.append((now, int(self.counters().frames_processed)))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 10:
            self._rate_window.popleft()
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    @attribute(
        dtype=str, label="Output directory", doc="where this stage writes result files", access=AttrWriteType.READ
    )
    def outputDirectory(self) -> str:
        return str(self.OutputDirectory)
