"""The merge stage's parts alone: the gap check with a fake clock, the latency window."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline_core.errors import UpstreamError
from pipeline_core.live.merge_gaps import GapCheck, GapPolicy, GapState
from pipeline_core.live.merge_latency import LatencyWindow


@dataclass
class Scan:
    scan: str
    raw_file: str = "/raw/scan_m1.nxs"
    gaps: GapState = field(default_factory=GapState)
    lost: list[int] = field(default_factory=list)

    def missing(self) -> list[int]:
        return list(self.lost)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_scan_asks_again_up_to_the_bound_then_closes():
    clock, asked = Clock(), []
    check = GapCheck(GapPolicy(scan_timeout_s=60, gap_check_s=10, max_requests=2), lambda *a: asked.append(a), clock)
    scan = Scan("s1", lost=[4, 5])
    check.news(scan)
    clock.now += 5
    assert list(check.check([scan])) == [] and asked == []  # not quiet long enough
    clock.now += 6
    assert list(check.check([scan])) == [] and asked == [("s1", [4, 5], "/raw/scan_m1.nxs")]
    clock.now += 5
    assert list(check.check([scan])) == [] and len(asked) == 1  # asked 5 s ago: wait gap_check_s
    clock.now += 6
    list(check.check([scan]))
    clock.now += 11
    list(check.check([scan]))
    assert len(asked) == 2 and scan.gaps.requests == 2  # the bound: never a third time
    clock.now += 60
    assert list(check.check([scan])) == [(scan, "no news for 60 s")]


def test_news_restarts_the_quiet_and_a_complete_scan_is_never_asked_for():
    clock, asked = Clock(), []
    check = GapCheck(GapPolicy(scan_timeout_s=30, gap_check_s=10), lambda *a: asked.append(a), clock)
    waiting, complete = Scan("s1", lost=[7]), Scan("s2")
    check.news(waiting)
    check.news(complete)
    clock.now += 9
    check.news(waiting)
    clock.now += 9
    assert list(check.check([waiting, complete])) == [] and asked == []
    clock.now += 25  # s2 had no news for 43 s, nothing missing: closed by the timeout, never asked for
    closed = list(check.check([waiting, complete]))
    assert asked == [("s1", [7], "/raw/scan_m1.nxs")]
    assert [s.scan for s, _ in closed] == ["s2"]


def test_a_request_the_stitcher_did_not_take_is_made_again_and_not_counted():
    """A Stitcher restarting while the Merger asks: the request is made again gap_check_s later, each
    failure said, and the bound of max_requests counts only requests the Stitcher took."""
    clock, asked, said = Clock(), [], []
    down = {"s1": 3}  # the Stitcher refuses the first three

    def request(scan, frames, raw):
        if down[scan]:
            down[scan] -= 1
            raise UpstreamError(f"p02/xrd/stitcher did not take the request for {scan}")
        asked.append((scan, frames))

    check = GapCheck(GapPolicy(scan_timeout_s=60, gap_check_s=3, max_requests=1), request, clock, said.append)
    scan = Scan("s1", lost=[11, 12])
    check.news(scan)
    for _ in range(3):
        clock.now += 3.5
        assert list(check.check([scan])) == [] and asked == [] and scan.gaps.requests == 0
    # said once for the run of refusals (each is logged): Status keeps its few lines for other problems
    assert said == [
        "p02/xrd/stitcher did not take the request for s1; asked again every 3 s until it does "
        "(the scan closes after 60 s without news)"
    ]
    assert scan.gaps.refused == 3
    clock.now += 3.5
    assert list(check.check([scan])) == [] and asked == [("s1", [11, 12])] and scan.gaps.requests == 1
    clock.now += 3.5
    list(check.check([scan]))
    assert len(asked) == 1  # the bound counts the request taken


def test_a_failure_of_our_own_while_asking_counts_and_the_scan_still_times_out():
    clock, said = Clock(), []

    def request(scan, frames, raw):
        raise ValueError("a bug")

    check = GapCheck(GapPolicy(scan_timeout_s=20, gap_check_s=5, max_requests=2), request, clock, said.append)
    scan, other = Scan("s1", lost=[3]), Scan("s2")
    check.news(scan)
    check.news(other)
    closed: list = []
    while not closed and clock.now < 1100:
        clock.now += 5.5
        closed = [s.scan for s, _ in check.check([scan, other])]
    assert closed == ["s1", "s2"] and clock.now == 1022.0  # neither kept open by the failures, none skipped
    assert scan.gaps.requests == 2 and said == ["scan s1: asking again for 1 frame(s) failed: ValueError: a bug"] * 2


def test_a_stitcher_that_never_comes_back_leaves_the_scan_to_its_time_out():
    clock, said = Clock(), []

    def request(scan, frames, raw):
        raise UpstreamError("p02/xrd/stitcher did not take the request")

    check = GapCheck(GapPolicy(scan_timeout_s=20, gap_check_s=5), request, clock, said.append)
    scan = Scan("s1", lost=[3])
    check.news(scan)
    closed: list = []
    while not closed and clock.now < 1100:
        clock.now += 5.5
        closed = list(check.check([scan]))
    assert closed == [(scan, "no news for 20 s")] and clock.now == 1022.0  # the first check past 20 s
    assert len(said) == 1 and scan.gaps.requests == 0 and scan.gaps.refused == 4


def test_without_upstream_a_quiet_scan_only_times_out():
    clock = Clock()
    check = GapCheck(GapPolicy(scan_timeout_s=20, gap_check_s=5), None, clock)
    scan = Scan("s1", lost=[1])
    check.news(scan)
    clock.now += 21
    assert list(check.check([scan])) == [(scan, "no news for 20 s")] and scan.gaps.requests == 0


def test_the_latency_is_the_median_of_the_scan_being_merged():
    window = LatencyWindow(size=3)
    assert window.median() == 0.0
    for value in (5.0, 1.0, 2.0):
        window.record("a", value)
    assert window.median() == 2.0
    window.record("a", 9.0)  # the window holds the last 3: 1, 2, 9
    assert window.median() == 2.0
    window.record("b", 0.5)  # a new scan starts afresh
    assert window.median() == 0.5
