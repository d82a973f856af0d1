"""The gap check: a quiet scan with missing frames asks for them again, then gives up and closes.

Events are hints (Tango drops them under load, an Integrator may die with a batch), so the Merger
does not wait forever for frames that will not come: after ``gap_check_s`` of quiet it asks the
Stitcher for the missing frames (at most ``max_requests`` times), and after ``scan_timeout_s``
without news it closes the scan with them listed as failed. A request the Stitcher did not take
(``UpstreamError``: it is restarting, say) is not counted: it is made again ``gap_check_s`` later,
until the scan's time-out. No I/O here: testable with a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import UpstreamError

log = logging.getLogger(__name__)

#: Close a scan after this many seconds without news (missing frames listed as failed).
DEFAULT_SCAN_TIMEOUT_S = 120.0
#: Seconds of quiet after which missing frames are requested again.
DEFAULT_GAP_CHECK_S = 10.0
#: Requests for the same scan's missing frames before waiting for the timeout only.
DEFAULT_MAX_REQUESTS = 3

#: ``request_missing(scan, frame_numbers, raw_file)``: ask upstream to make work again for them.
RequestMissing = Callable[[str, list[int], str], None]


@dataclass(frozen=True)
class GapPolicy:
    scan_timeout_s: float = DEFAULT_SCAN_TIMEOUT_S
    gap_check_s: float = DEFAULT_GAP_CHECK_S
    max_requests: int = DEFAULT_MAX_REQUESTS


@dataclass
class GapState:
    """When a scan last had news and was last asked for, and how often (clock seconds)."""

    last_news: float = 0.0
    last_request: float = 0.0
    requests: int = 0
    #: requests the Stitcher did not take (not counted in ``requests``), and whether the last one was such
    refused: int = 0
    refusing: bool = False


class Watched(Protocol):
    """What the gap check needs of an open scan."""

    scan: str
    raw_file: str
    gaps: GapState

    def missing(self) -> list[int]: ...


W = TypeVar("W", bound=Watched)


class GapCheck:
    def __init__(
        self,
        policy: GapPolicy,
        request_missing: RequestMissing | None,
        clock: Callable[[], float],
        on_error: Callable[[str], None] | None = None,
    ):
        self.policy = policy
        self._request_missing = request_missing
        self._clock = clock
        self._on_error = on_error or (lambda message: None)

    def news(self, scan: Watched) -> None:
        """Something of the scan arrived: the quiet starts again."""
        scan.gaps.last_news = self._clock()

    def check(self, scans: Iterable[W]) -> Iterator[tuple[W, str]]:
        """Ask again for what quiet scans are missing; yield the scans to close now, with why (one by
        one, so each is closed before the next is looked at)."""
        now = self._clock()
        p = self.policy
        for scan in scans:
            g = scan.gaps
            idle = now - g.last_news
            if (
                self._request_missing
                and g.requests < p.max_requests
                and idle > p.gap_check_s
                and now - g.last_request > p.gap_check_s
            ):
                gaps = scan.missing()
                if gaps:
                    g.last_request = now
                    log.warning(
                        "scan %s: %d frame(s) missing after %.0f s quiet; asking again (%d/%d)",
                        scan.scan,
                        len(gaps),
                        idle,
                        g.requests + 1,
                        p.max_requests,
                    )
                    if self._ask(scan, gaps):
                        continue
            if idle > p.scan_timeout_s:
                yield scan, f"no news for {p.scan_timeout_s:g} s"  # 120 s, or 0.5 s (never "0 s")

    def _ask(self, scan: Watched, gaps: list[int]) -> bool:
        """Make one request; True when the Stitcher took it (counted). One it did not take is made again
        ``gap_check_s`` later and said in Status once per run of refusals (each is logged); any other
        failure counts as a request made, so a scan always reaches its time-out."""
        g, p = scan.gaps, self.policy
        assert self._request_missing is not None
        try:
            self._request_missing(scan.scan, gaps, scan.raw_file)
        except UpstreamError as exc:
            g.refused += 1
            message = (
                f"{exc}; asked again every {p.gap_check_s:g} s until it does (the scan closes after "
                f"{p.scan_timeout_s:g} s without news)"
            )
            log.warning("%s", message)
            if not g.refusing:
                self._on_error(message)
            g.refusing = True
            return False
        except Exception as exc:  # a failure of ours: counted, said, and the scan's time-out still ends it
            g.requests += 1
            log.exception("scan %s: asking again for %d frame(s) failed", scan.scan, len(gaps))
            failed = f"{type(exc).__name__}: {exc}"
            self._on_error(f"scan {scan.scan}: asking again for {len(gaps)} frame(s) failed: {failed}")
            return False
        if g.refusing:
            log.warning("scan %s: the request was taken after %d refusal(s)", scan.scan, g.refused)
        g.requests += 1
        g.refusing = False
        return True
