"""The reliability suite's fault ledger counts what the tests inject, never a fault nobody reported."""

import pytest

from tests.reliability.conftest import FaultLedger


def test_each_fault_reported_counts_and_a_test_that_reports_none_counts_nothing():
    ledger = FaultLedger()
    before = ledger.total
    ledger.fault("SIGTERM to the Merger")
    ledger.fault("hostile command argument", 6)
    ledger.end_test("test_signals.py::test_merger", before)
    before = ledger.total
    ledger.checked(40)
    ledger.end_test("test_stage_faults.py::test_reports_nothing", before)
    assert ledger.total == 7 and dict(ledger.faults) == {"SIGTERM to the Merger": 1, "hostile command argument": 6}
    assert ledger.unreported == ["test_stage_faults.py::test_reports_nothing"]
    assert ledger.summary(processes_left=0) == (
        "fault injection: 7 faults injected (SIGTERM to the Merger: 1, hostile command argument: 6); "
        "40 frames checked; processes left: 0; "
        "1 test(s) reported no fault and count none: test_stage_faults.py::test_reports_nothing"
    )


def test_a_fault_count_below_one_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"at least 1, got 0 for 'disk full'"):
        FaultLedger().fault("disk full", 0)
