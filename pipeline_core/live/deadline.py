"""One time budget for a whole shutdown, shared by every thread a server waits for.

A server stopped by SIGTERM waits for its trigger, its event publisher and its stage's workers.
Each waiting with its own timeout (5 + 5 + 5 + 10 s in sequence) made the stop as long as their
sum, and a wait without one made it a hang. So the device makes one :class:`Deadline` when its stop
begins and every join takes what is left of it; a thread still running at the end is named in the
log and left behind (every one of ours is a daemon thread: the process exits anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: seconds a whole server stop may take, every join included: under the 10 s after which our launcher
#: (``demo``, ``database``, tests) sends SIGKILL, so that a stop it asked for is never cut short
STOP_BUDGET_S = 8.0


class Deadline:
    """A point in time ``seconds`` from now; ``clock`` (monotonic seconds) is for tests."""

    def __init__(self, seconds: float = STOP_BUDGET_S, clock: Callable[[], float] = time.monotonic):
        if not seconds >= 0:
            raise ValueError(f"a stop deadline of {seconds!r} s; expected seconds >= 0")
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def left(self) -> float:
        """Seconds left (0 once it has passed)."""
        return max(0.0, self._end - self._clock())

    def join(self, thread: threading.Thread | None, what: str = "") -> bool:
        """Wait for ``thread`` at most until the deadline; False (and a warning naming it) if it still runs."""
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            return True
        thread.join(self.left())
        if not thread.is_alive():
            return True
        log.warning(
            "thread %s (%s) still running at the end of the %g s stop budget: left behind",
            thread.name, what or "no detail", self.seconds,
        )  # fmt: skip
        return False


def as_deadline(deadline: Deadline | float | None, default_s: float = STOP_BUDGET_S) -> Deadline:
    """``deadline`` itself, or one ``deadline`` (or ``default_s``) seconds from now."""
    if isinstance(deadline, Deadline):
        return deadline
    return Deadline(default_s if deadline is None else float(deadline))
