"""The reliability suite's fault ledger: how many faults were injected and how many frames checked.

Each test records what it broke, as many times as it broke it (``ledger.fault("SIGTERM to the
Merger")``, ``ledger.fault("hostile command argument", 6)``) and how many frames of the result it
compared (``ledger.checked(n)``); the run ends with one summary line, so the figures in a closing
note come from the suite itself, not from memory. Nothing is counted for a test that reports
nothing: such tests are named in the summary instead (they used to count as one fault each, so the
total said more than what was injected).

Under pytest-xdist each worker keeps its own ledger and hands it to the controller at its end
(``as_dict``/``from_dict`` through xdist's ``workeroutput``); the controller adds them up
(``merge``) and prints the one summary line (tests/conftest.py).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

#: the format of ``FaultLedger.as_dict``: it crosses from an xdist worker to the controller
LEDGER_VERSION = 1


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

    @property
    def empty(self) -> bool:
        """Nothing to say: no fault injected and no test that reported none (no reliability test ran)."""
        return not self.faults and not self.unreported

    def end_test(self, nodeid: str, total_before: int) -> None:
        """Called after each test with :attr:`total` as it was before the test."""
        if self.total == total_before:
            self.unreported.append(nodeid)

    def merge(self, other: FaultLedger) -> None:
        """Add ``other``'s faults, frames and unreported tests to this ledger (an xdist worker's, at its end)."""
        self.faults.update(other.faults)
        self.frames_checked += other.frames_checked
        self.unreported.extend(other.unreported)

    def as_dict(self) -> dict:
        """Plain values for xdist's ``workeroutput`` (which carries only builtin types)."""
        return {
            "version": LEDGER_VERSION,
            "faults": dict(self.faults),
            "frames_checked": self.frames_checked,
            "unreported": list(self.unreported),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FaultLedger:
        if data.get("version") != LEDGER_VERSION:
            raise ValueError(f"fault ledger format {data.get('version')!r}; expected {LEDGER_VERSION}")
        return cls(collections.Counter(data["faults"]), int(data["frames_checked"]), list(data["unreported"]))

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


#: this process' ledger: the whole run's without xdist; under xdist a worker's, or on the controller
#: the sum of the workers' ledgers
RUN_LEDGER = FaultLedger()
