"""The Stitcher's queue of work items: claims, leases, acknowledgements and lease expiry.

Why apart from the stage: this is the protocol that keeps several Integrators from duplicating or
losing a frame, and it is easiest to get right -- and to test -- without files, threads or Tango.
It does no I/O and reads time only from the clock it is given, so a test drives leases with a fake
clock instead of sleeping.

An item handed out stays *leased* until a later claim of its Integrator acknowledges it (``done``).
A lease that runs out (the Integrator was killed, say) puts the item back at the head of the queue;
a frame integrated twice is harmless -- the Merger keeps one -- a frame never integrated is not.
Frames whose leases ran out ``max_lease_expiries`` times are not handed out again but queued as a
failed ``:died`` item: data that kills every Integrator taking it must not loop forever.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import PipelineError
from ..messages import WorkItem

log = logging.getLogger(__name__)


class QueueFull(PipelineError):
    """A request beyond one of the stage's bounds; the message names the queue and its bound."""


@dataclass(frozen=True)
class Expired:
    """What one lease check did: items handed out again, and items that died (queued as failed)."""

    requeued: list[WorkItem]
    died: list[WorkItem]

    def __len__(self) -> int:
        return len(self.requeued) + len(self.died)


@dataclass(frozen=True)
class _Lease:
    item: WorkItem
    claimant: str
    since: float


class WorkQueue:
    """Work items waiting for an Integrator, and those leased to one. Thread-safe.

    ``max_items`` bounds what requeues may add (:meth:`put_again` refuses beyond it); parts are
    added with :meth:`put` after the caller checked :attr:`full` (back-pressure: a complete part
    waits on disk rather than being refused). ``clock`` gives monotonic seconds.
    """

    def __init__(self, max_items: int, lease_s: float, max_lease_expiries: int, clock: Callable[[], float]):
        self.max_items = max_items
        self.lease_s = lease_s
        self.max_lease_expiries = max_lease_expiries
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._leases: dict[str, _Lease] = {}
        #: frames range (scan:part:start:stop) -> hand-outs and expired leases, until acknowledged
        self._handouts: dict[str, int] = {}
        self._expiries: dict[str, int] = {}

    @property
    def depth(self) -> int:
        """Items waiting to be claimed."""
        with self._lock:
            return len(self._queue)

    @property
    def leased(self) -> int:
        """Items claimed and not acknowledged yet."""
        with self._lock:
            return len(self._leases)

    @property
    def full(self) -> bool:
        with self._lock:
            return len(self._queue) >= self.max_items

    def put(self, items: Iterable[WorkItem]) -> None:
        """Queue a part's items (the caller held it back while :attr:`full`)."""
        with self._lock:
            self._queue.extend(items)

    def put_again(self, items: list[WorkItem], what: str) -> None:
        """Queue items made again (``what`` names them for the refusal); QueueFull, adding none, when
        they would not all fit under ``max_items``."""
        with self._lock:
            room = self.max_items - len(self._queue)
            if len(items) > room:
                raise QueueFull(
                    f"{what}: {len(items)} work items would not fit "
                    f"(bound MaxItems = {self.max_items}, {max(0, room)} free); refused"
                )
            self._queue.extend(items)

    def claim(
        self, claimant: str, done: Iterable[str] = (), prepare: Callable[[WorkItem], WorkItem] | None = None
    ) -> WorkItem | None:
        """Acknowledge ``done`` (item ids), then lease the next item to ``claimant``, or None.

        ``prepare`` may replace the item before it is leased (the stage stamps late settings), under
        the queue's lock so that what is leased is what is handed out.
        """
        with self._lock:
            for item_id in done:
                lease = self._leases.pop(item_id, None)
                if lease is not None:
                    self._handouts.pop(_range_key(lease.item), None)
                    self._expiries.pop(_range_key(lease.item), None)
            if not self._queue:
                return None
            item = self._queue.popleft()
            if prepare is not None:
                item = prepare(item)
            item = dataclasses.replace(item, lease_s=self.lease_s)  # the claimant knows when it runs out
            self._leases[item.item_id] = _Lease(item, claimant, self._clock())
            key = _range_key(item)
            self._handouts[key] = self._handouts.get(key, 0) + 1
            _trim(self._handouts)
            return item

    def expire(self) -> Expired:
        """Hand out again the items whose lease ran out; queue as failed those that ran out too often."""
        now = self._clock()
        requeued: list[WorkItem] = []
        died: list[WorkItem] = []
        with self._lock:
            expired = [k for k, lease in self._leases.items() if now - lease.since > self.lease_s]
            for item_id in expired:
                lease = self._leases.pop(item_id)
                key = _range_key(lease.item)
                self._expiries[key] = self._expiries.get(key, 0) + 1
                _trim(self._expiries)
                if lease.item.error is None and self._expiries[key] >= self.max_lease_expiries:
                    died.append(self._died(lease.item, self._handouts.get(key, 0)))
                    continue
                self._queue.appendleft(lease.item)
                requeued.append(lease.item)
                log.warning("lease of %s (claimed by %s) expired: handed out again", item_id, lease.claimant or "?")
            self._queue.extend(died)
        return Expired(requeued, died)

    def settle(self, scan: str, wanted: Iterable[int]) -> tuple[set[int], int]:
        """Of frames of ``scan`` asked for again, those not already waiting in the queue (they will be
        handed out anyway); leases covering them are settled now (their Integrator died, or its
        patterns were lost), else they would expire later and the frames be integrated twice.

        Returns the frames still wanted and how many leases were settled."""
        wanted_set = set(wanted)
        with self._lock:
            for item in self._queue:
                if item.scan == scan:
                    wanted_set.difference_update(item.frame_numbers)
            settled = [
                k
                for k, lease in self._leases.items()
                if lease.item.scan == scan and wanted_set & set(lease.item.frame_numbers)
            ]
            for item_id in settled:
                self._leases.pop(item_id)
        return wanted_set, len(settled)

    def _died(self, item: WorkItem, handouts: int) -> WorkItem:
        """The failed item that replaces one whose Integrators died: it names the files, and no
        Integrator reads data for it (it only carries the failure to the Merger)."""
        first, last = (item.frame_numbers[0], item.frame_numbers[-1]) if item.frame_numbers else (0, 0)
        reason = (
            f"Integrators taking this item died twice (corrupt data?): frames {first}..{last} "
            f"(handed out {handouts} times, {self.max_lease_expiries} leases expired) "
            f"of {', '.join(item.module_files)}"
        )
        return dataclasses.replace(item, item_id=f"{item.item_id}:died", error=reason)


def _range_key(item: WorkItem) -> str:
    """The frames an item covers, whatever its id: a requeued copy shares it with the original."""
    return f"{item.scan}:{item.part}:{item.start}:{item.stop}"


def _trim(counts: dict[str, int], bound: int = 100_000) -> None:
    """Keep a per-item bookkeeping dict bounded (items never acknowledged would otherwise pile up)."""
    while len(counts) > bound:
        counts.pop(next(iter(counts)))
