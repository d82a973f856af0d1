"""The fault-injection suite's ledger: how many faults were injected and how many frames checked.

Each test records what it broke, as many times as it broke it (``ledger.fault("SIGTERM to the
Merger")``, ``ledger.fault("hostile command argument", 6)``) and how many frames of the result it
compared (``ledger.checked(n)``); the run ends with one summary line, so the figures in a closing
note come from the suite itself, not from memory. Nothing is counted for a test that reports
nothing: such tests are named in the summary instead (they used to count as one fault each, so the
total said more than what was injected).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest


@dataclass
class FaultLedger:
    faults: collections.Counter = field(default_factory=collections.Counter)
    frames_checked: int = 0
    #: tests that ran and reported no fault injected (node ids)
    unreported: list[str] = field(default_factory=list)

    def fault(self, kind: str, n: int = 1) -> None:
        """``n`` faults of ``kind`` were injected (each signal sent, each file corrupted, each hostile input)."""
        if n < 1:
            raise ValueError(f"a fault count must be at least 1, got {n} for {kind!r}")
        self.faults[kind] += n

    def checked(self, frames: int) -> None:
        self.frames_checked += int(frames)

    @property
    def total(self) -> int:
        return sum(self.faults.values())

    def end_test(self, nodeid: str, total_before: int) -> None:
        """Called after each test with :attr:`total` as it was before the test."""
        if self.total == total_before:
            self.unreported.append(nodeid)

    def summary(self, processes_left: int) -> str:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.faults.items()))
        line = (
            f"fault injection: {self.total} faults injected ({kinds or 'none reported'}); "
            f"{self.frames_checked} frames checked; processes left: {processes_left}"
        )
        if self.unreported:
            names = ", ".join(self.unreported[:5]) + (", ..." if len(self.unreported) > 5 else "")
            line += f"; {len(self.unreported)} test(s) reported no fault and count none: {names}"
        return line


_LEDGER = FaultLedger()


@pytest.fixture(scope="session")
def ledger() -> FaultLedger:
    """The run's ledger (session scope: a module fixture that injects a fault records it too)."""
    return _LEDGER


@pytest.fixture(autouse=True)
def _note_tests_that_report_no_fault(request):
    """Count nothing on a test's behalf: a test that reported no fault is named in the summary."""
    before = _LEDGER.total
    yield
    _LEDGER.end_test(request.node.nodeid, before)


def pytest_terminal_summary(terminalreporter):
    if not _LEDGER.faults and not _LEDGER.unreported:
        return
    from ..conftest import LEFT_BEHIND

    terminalreporter.write_line(_LEDGER.summary(len(LEFT_BEHIND)))
