"""The latency figure an operator watches: part announced by the detector → its patterns in the file.

Kept by the merge stage (not the device that shows it) so every driver of the stage reports the same
figure: the median over the recent batches of the scan being merged, so one slow batch does not
swing it and a new scan starts afresh.
"""

from __future__ import annotations

import threading
from collections import deque

#: Batches the median is taken over.
LATENCY_WINDOW = 200


class LatencyWindow:
    """Recent latencies of one scan; written on the stage's thread, read on any."""

    def __init__(self, size: int = LATENCY_WINDOW):
        self._values: deque[float] = deque(maxlen=size)
        self._scan = ""
        self._lock = threading.Lock()

    def record(self, scan: str, latency_s: float) -> None:
        """Add one batch's latency; a batch of another scan than the last starts a new window."""
        with self._lock:
            if scan != self._scan:  # the figure describes the scan being merged
                self._scan = scan
                self._values.clear()
            self._values.append(latency_s)

    def median(self) -> float:
        """Median over the window (the upper one of an even count), 0 before any batch."""
        with self._lock:
            values = sorted(self._values)
        return values[len(values) // 2] if values else 0.0
