"""The fault-injection suite's fixtures: the run's fault ledger (tests/fault_ledger.py), which counts
what each test injects and names the tests that injected nothing. The summary line is printed once
for the whole run by tests/conftest.py (under pytest-xdist, on the controller, from every worker's ledger).
"""

from __future__ import annotations

import pytest

from ..fault_ledger import RUN_LEDGER, FaultLedger

__all__ = ["FaultLedger", "ledger"]


@pytest.fixture(scope="session")
def ledger() -> FaultLedger:
    """The run's ledger (session scope: a module fixture that injects a fault records it too)."""
    return RUN_LEDGER


@pytest.fixture(autouse=True)
def _note_tests_that_report_no_fault(request):
    """Count nothing on a test's behalf: a test that reported no fault is named in the summary."""
    before = RUN_LEDGER.total
    yield
    RUN_LEDGER.end_test(request.node.nodeid, before)
