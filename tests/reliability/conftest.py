"""The fault-injection suite's ledger: how many faults were injected and how many frames checked.

Each test records what it broke (``ledger.fault("SIGTERM to the Merger")``) and how many frames of
the result it compared (``ledger.checked(n)``); the run ends with one summary line, so the figures
in a closing note come from the suite itself, not from memory.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pytest


@dataclass
class FaultLedger:
    faults: collections.Counter = field(default_factory=collections.Counter)
    frames_checked: int = 0

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults[kind] += n

    def checked(self, frames: int) -> None:
        self.frames_checked += int(frames)


_LEDGER = FaultLedger()


@pytest.fixture
def ledger() -> FaultLedger:
    return _LEDGER


@pytest.fixture(autouse=True)
def _count_the_fault(request):
    """Every test here injects at least one fault: count it under its module's name unless the test
    recorded its faults itself (e.g. several corruptions in one run)."""
    before = sum(_LEDGER.faults.values())
    yield
    if sum(_LEDGER.faults.values()) == before:
        _LEDGER.fault(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", " "))


def pytest_terminal_summary(terminalreporter):
    if not _LEDGER.faults:
        return
    from ..conftest import LEFT_BEHIND

    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(_LEDGER.faults.items()))
    terminalreporter.write_line(
        f"fault injection: {sum(_LEDGER.faults.values())} faults injected ({kinds}); "
        f"{_LEDGER.frames_checked} frames checked; processes left: {len(LEFT_BEHIND)}"
    )
