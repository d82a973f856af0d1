"""What a device's State and Status are made of: a fault, an alarm, recent problems, a summary.

Stages report problems from their own threads; the operator reads them in Status until they are
acknowledged (``ClearErrors``). Kept apart from the device so the rules (FAULT before ALARM before
RUNNING/ON, the newest few problems only) live in one place.
"""

from __future__ import annotations

import collections
import threading
import time

from tango import DevState

#: How many recent problems Status shows.
STATUS_ERRORS = 5


class StatusLog:
    """A fault (the device cannot work), and the last few problems reported from any thread."""

    def __init__(self, keep: int = STATUS_ERRORS):
        self._errors: collections.deque[str] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        #: why the device cannot work at all (FAULT), or None
        self.fault: str | None = None

    def report(self, message: str) -> None:
        """Keep ``message`` with the time it came (thread-safe)."""
        stamp = time.strftime("%H:%M:%S")
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

    def status(self, summary: str, alarm: str | None, waiting: list[str]) -> str:
        """The fault and the alarm first, then the summary, links not delivering yet and recent problems."""
        lines = [summary, *waiting]
        if alarm:
            lines.insert(0, f"ALARM: {alarm}")
        if self.fault:
            lines.insert(0, f"FAULT: {self.fault}")
        errors = self.recent()
        if errors:
            lines.append("Recent problems (ClearErrors to acknowledge):")
            lines += [f"  {e}" for e in errors]
        return "\n".join(lines)
