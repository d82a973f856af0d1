"""The frame counters every pipeline device shows, their change events and the throughput.

A mixin for :class:`~tango_servers.base.PipelineDevice`: each stage keeps a counters dataclass
(``frames_received``, ``frames_processed``, ``frames_failed``); the device only has to return it
from ``counters()``. One table drives the attributes and the events so they cannot disagree.

Their change events, like every other attribute's, come from :mod:`.change_events`. Units are ones
pint (hence Taurus) parses: counts carry no unit, their noun is in the label.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from tango.server import attribute

from .change_events import ChangePublisher

log = logging.getLogger(__name__)

#: attribute -> field of the stage's counters dataclass
COUNTERS = {"framesReceived": "frames_received", "framesProcessed": "frames_processed", "framesFailed": "frames_failed"}


class ThroughputWindow:
    """Frames per second over the last ``seconds``, from (time, count) samples taken at each read."""

    def __init__(self, seconds: float = 10.0, samples: int = 50):
        self.seconds = seconds
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=samples)

    def rate(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, int(count)))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.seconds:
            self._samples.popleft()
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def latency_attribute(doc: str) -> attribute:
    """Decorator for the ``latency`` attribute every stage declares (seconds; ``doc`` says from what to what)."""
    return attribute(dtype=float, label="Latency", unit="s", format="%.3f", min_value=0, doc=doc)


def _counter(field: str, label: str, doc: str) -> attribute:
    def read(self) -> int:
        return int(getattr(self.counters(), field))

    return attribute(fget=read, dtype=int, label=label, unit="", format="%d", min_value=0, doc=doc)


class CounterAttributes:
    """framesReceived/Processed/Failed and throughput, read from the stage's counters."""

    throughput_window: ThroughputWindow

    def counters(self) -> Any:
        """The stage's counters dataclass (frames_received, frames_processed, frames_failed)."""
        raise NotImplementedError

    publisher: ChangePublisher
    _last_work: float

    def push_progress(self, *_args: Any) -> None:
        """After each unit of stage work (any thread): mark the device busy and let the publisher push
        what changed. Never blocks: the reads and pushes happen on the publisher's thread."""
        self._last_work = time.monotonic()
        self.publisher.wake()

    framesReceived = _counter(
        "frames_received", "Frames received", "frames announced to this stage since the server started"
    )
    framesProcessed = _counter(
        "frames_processed", "Frames processed", "frames this stage has finished (stitched / integrated / merged)"
    )
    framesFailed = _counter(
        "frames_failed", "Frames failed", "frames that could not be processed; Status and the result file say why"
    )

    @attribute(
        dtype=float,
        label="Throughput (frames/s)",
        unit="1/s",
        format="%.1f",
        min_value=0,
        doc="frames processed per second over the last few seconds (frames/s)",
    )
    def throughput(self) -> float:
        return self.throughput_window.rate(self.counters().frames_processed)
