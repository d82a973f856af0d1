"""The Stitcher's work queue alone: claims, acknowledgements, leases and expiry, with a fake clock.

No files, no threads, no sleeping: the clock moves only when a test says so.
"""

import dataclasses

import pytest

from pipeline_core.live.work_queue import QueueFull, WorkQueue
from pipeline_core.messages import WorkItem


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _item(start: int, scan: str = "scan_00001", n: int = 2, error: str | None = None) -> WorkItem:
    files = ["/raw/scan_00001_m1.nxs", "/raw/scan_00001_m2.nxs"]
    numbers = list(range(start + 1, start + n + 1))
    return WorkItem(f"{scan}:0:{start}", scan, "lambda", 0, files, start, start + n, numbers, error=error)


def _queue(clock, max_items=10, lease_s=10.0, max_lease_expiries=2):
    return WorkQueue(max_items, lease_s, max_lease_expiries, clock)


def test_claims_hand_out_in_order_and_a_later_claim_acknowledges():
    queue = _queue(FakeClock())
    queue.put([_item(0), _item(2)])
    first = queue.claim("int1")
    second = queue.claim("int2")
    assert (first.item_id, second.item_id) == ("scan_00001:0:0", "scan_00001:0:2")
    assert queue.claim("int1") is None and queue.depth == 0 and queue.leased == 2
    assert queue.claim("int1", done=[first.item_id, "unknown"]) is None
    assert queue.leased == 1


def test_prepare_replaces_the_item_that_is_leased_and_handed_out():
    queue = _queue(FakeClock())
    queue.put([_item(0)])
    item = queue.claim("int1", prepare=lambda i: dataclasses.replace(i, settings_hash="abc"))
    assert item.settings_hash == "abc"


def test_an_expired_lease_is_handed_out_again_first_and_an_acknowledged_one_never():
    clock = FakeClock()
    queue = _queue(clock)
    queue.put([_item(0), _item(2), _item(4)])
    lost, done = queue.claim("doomed"), queue.claim("int2")
    queue.claim("int2", done=[done.item_id])  # leases the third item, acknowledges the second
    clock.now += 10  # exactly the lease: not yet
    assert len(queue.expire()) == 0
    clock.now += 1
    expired = queue.expire()
    assert [i.item_id for i in expired.requeued] == [lost.item_id, "scan_00001:0:4"] and expired.died == []
    assert queue.leased == 0 and queue.depth == 2
    assert queue.claim("int3").item_id == "scan_00001:0:4"  # put back at the head, most recent first


def test_frames_whose_leases_expire_twice_are_queued_as_died_and_never_handed_out_again():
    clock = FakeClock()
    queue = _queue(clock)
    queue.put([_item(0)])
    for _ in range(2):
        assert queue.claim("int").item_id == "scan_00001:0:0"
        clock.now += 11
        expired = queue.expire()
    (died,) = expired.died
    assert expired.requeued == [] and died.item_id == "scan_00001:0:0:died"
    assert "died twice" in died.error and "handed out 2 times, 2 leases expired" in died.error
    assert "/raw/scan_00001_m1.nxs" in died.error and died.frame_numbers == [1, 2]
    assert queue.claim("int").item_id == died.item_id  # the failure travels on ...
    clock.now += 11
    expired = queue.expire()  # ... and an item that already failed is handed out again, not failed again
    assert [i.item_id for i in expired.requeued] == [died.item_id] and expired.died == []


def test_an_acknowledgement_resets_the_expiry_count():
    clock = FakeClock()
    queue = _queue(clock)
    queue.put([_item(0)])
    queue.claim("int")
    clock.now += 11
    queue.expire()  # once
    item = queue.claim("int")
    queue.put([_item(0)])  # the same frames queued again later (a requeue, say)
    assert queue.claim("int", done=[item.item_id]).item_id == item.item_id
    clock.now += 11
    expired = queue.expire()
    assert len(expired.requeued) == 1 and expired.died == []  # the count started over


def test_put_again_is_bounded_by_max_items_and_adds_nothing_beyond():
    queue = _queue(FakeClock(), max_items=3)
    queue.put([_item(0), _item(2)])
    assert not queue.full
    refused = r"frames of s requested again: 2 work items would not fit \(bound MaxItems = 3, 1 free\); refused"
    with pytest.raises(QueueFull, match=refused):
        queue.put_again([_item(4), _item(6)], "frames of s requested again")
    assert queue.depth == 2
    queue.put_again([_item(4)], "frames of s requested again")
    assert queue.depth == 3 and queue.full
    queue.put([_item(6)])  # a part's items: the caller checks ``full`` first (back-pressure)
    assert queue.depth == 4


def test_settle_drops_frames_already_waiting_and_settles_the_leases_covering_the_rest():
    clock = FakeClock()
    queue = _queue(clock)
    queue.put([_item(0), _item(2), _item(4), _item(0, scan="other")])
    lost = queue.claim("doomed")  # frames 1, 2
    queue.claim("int2")  # frames 3, 4, leased and not asked for
    wanted, settled = queue.settle("scan_00001", [1, 2, 5, 9])
    assert wanted == {1, 2, 9} and settled == 1  # 5 waits in the queue already; 9 is no item's
    assert queue.leased == 1
    clock.now += 60
    expired = queue.expire()
    assert [i.item_id for i in expired.requeued] == ["scan_00001:0:2"]  # the settled lease never comes back
    queue.claim("x", done=[lost.item_id])  # acknowledging a settled lease is harmless
