"""What a device's State and Status are made of: a fault, an alarm, recent problems, links, a summary.

Stages report problems from their own threads; the operator reads them in Status until they are
acknowledged (``ClearErrors``). Kept apart from the device so the rules (FAULT before ALARM before
RUNNING/ON, the newest few problems only, when a lost upstream becomes an ALARM) live in one place.

State says what holds *now*. A problem that failed work or lost data stays an ALARM until
acknowledged; an upstream link that is out (an Integrator started a moment before the Stitcher, a
planned restart of the Stitcher) is not a problem: while it is out Status says so, and a link that
had delivered before leaves a one-line note once it is back. Only an upstream out for longer than a bound
(``UpstreamAlarmAfter``) is an ALARM, and only while it is out.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tango import DevState

from .dev_failed import first_line

#: How many recent problems Status shows.
STATUS_ERRORS = 5
#: How many notes of links lost and regained Status shows.
STATUS_NOTES = 3
#: Default seconds an upstream link may be out before State is ALARM (device property UpstreamAlarmAfter):
#: a server restart takes a few seconds and Tango re-subscribes events on ~10 s cycles.
UPSTREAM_ALARM_AFTER_S = 60.0


def _stamp(wall: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


class StatusLog:
    """A fault (the device cannot work), and the last few problems reported from any thread."""

    def __init__(self, keep: int = STATUS_ERRORS):
        self._errors: collections.deque[str] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        #: why the device cannot work at all (FAULT), or None
        self.fault: str | None = None

    def report(self, message: str) -> None:
        """Keep ``message`` with the time it came (thread-safe)."""
        stamp = _stamp()
        with self._lock:
            self._errors.append(f"{stamp} {message}")

    def clear(self) -> None:
        """The operator acknowledged the problems shown."""
        with self._lock:
            self._errors.clear()

    def recent(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def state(self, alarm: str | None, busy: bool) -> DevState:
        """FAULT, then ALARM (a condition or an unacknowledged problem), then RUNNING or ON."""
        if self.fault:
            return DevState.FAULT
        if alarm or self.recent():
            return DevState.ALARM
        return DevState.RUNNING if busy else DevState.ON

    def status(self, summary: str, alarm: str | None, waiting: list[str], notes: list[str] | None = None) -> str:
        """The fault and the alarm first, then the summary, links out now, notes and recent problems."""
        lines = [summary, *waiting, *(f"Note: {n}" for n in notes or [])]
        if alarm:
            lines.insert(0, f"ALARM: {alarm}")
        if self.fault:
            lines.insert(0, f"FAULT: {self.fault}")
        errors = self.recent()
        if errors:
            lines.append("Recent problems (ClearErrors to acknowledge):")
            lines += [f"  {e}" for e in errors]
        return "\n".join(lines)


@dataclass
class _Outage:
    """A link that does not deliver: since when (clock and wall time), why, and whether it had
    delivered before (a link coming up for the first time is no news: no note)."""

    since: float
    wall: float
    why: str
    had_delivered: bool


class UpstreamLinks:
    """The links to upstream devices that do not deliver now, and notes of those that came back.

    A link is a name ("xrd/stitcher/1/workAvailable", "xrd/stitcher/1 ClaimWork"). ``lost`` starts
    an outage (a later call only updates the reason), ``regained`` ends it: a link that had
    delivered before leaves a one-line note (when, which link, for how long, the first line of the
    reason). :meth:`alarm` names the links out for longer than ``alarm_after_s``. Thread-safe: event
    callbacks, claim threads and the publisher call it.
    """

    def __init__(
        self,
        alarm_after_s: float = UPSTREAM_ALARM_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        keep_notes: int = STATUS_NOTES,
    ):
        self.alarm_after_s = alarm_after_s
        self._clock = clock
        self._wall = wall
        self._out: dict[str, _Outage] = {}
        self._delivered: set[str] = set()
        self._notes: collections.deque[str] = collections.deque(maxlen=keep_notes)
        self._lock = threading.Lock()

    def lost(self, link: str, why: str) -> None:
        """``link`` does not deliver (not yet, or no longer); only the first line of ``why`` is kept."""
        why = first_line(why)
        with self._lock:
            out = self._out.get(link)
            if out is None:
                self._out[link] = _Outage(self._clock(), self._wall(), why, link in self._delivered)
            else:
                out.why = why

    def regained(self, link: str) -> None:
        """``link`` delivers (again): an outage of a link that had delivered before leaves a note."""
        with self._lock:
            self._delivered.add(link)
            out = self._out.pop(link, None)
            if out is not None and out.had_delivered:
                seconds = self._clock() - out.since
                self._notes.append(
                    f"{_stamp(self._wall())} {link} back after {seconds:.0f} s (lost at {_stamp(out.wall)}: {out.why})"
                )

    def forget(self, link: str) -> None:
        """``link`` is not used any more (e.g. an Integrator stopped claiming): no outage, no note."""
        with self._lock:
            self._out.pop(link, None)

    @property
    def connected(self) -> bool:
        """Every link delivers (or there is none)."""
        with self._lock:
            return not self._out

    def waiting(self) -> list[str]:
        """One line per link out now, for Status: why, since when, and when it becomes an ALARM."""
        with self._lock:
            outages = sorted(self._out.items())
        after = f"ALARM if still out after {self.alarm_after_s:g} s"
        return [f"{link}: {o.why} (since {_stamp(o.wall)}; {after})" for link, o in outages]

    def alarm(self) -> str | None:
        """The links out for longer than ``alarm_after_s`` (None if none)."""
        now = self._clock()
        with self._lock:
            late = [(link, o) for link, o in sorted(self._out.items()) if now - o.since > self.alarm_after_s]
        if not late:
            return None
        return "; ".join(
            f"upstream {link} out for {now - o.since:.0f} s (UpstreamAlarmAfter {self.alarm_after_s:g} s): {o.why}"
            for link, o in late
        )

    def notes(self) -> list[str]:
        """The last few links lost and regained (no action needed), oldest first."""
        with self._lock:
            return list(self._notes)

    def clear_notes(self) -> None:
        with self._lock:
            self._notes.clear()
