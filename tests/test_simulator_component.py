"""The LambdaSimulator's component without Tango: stems, the plan frozen at Start, what it reports.

Component tier: the callbacks the device turns into change events are recorded here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tango_servers.simulator_component import (
    Phase,
    SimulatorCallbacks,
    SimulatorComponent,
    SimulatorConfig,
    SimulatorRefusal,
)

from .helpers import wait_for


class Recorded:
    """What the component reported, in order."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.written: list[int] = []
        self.changes = 0
        self.lock = threading.Lock()

    def callbacks(self) -> SimulatorCallbacks:
        return SimulatorCallbacks(self._changed, on_file=self.files.append, on_frames_written=self.written.append)

    def _changed(self) -> None:
        with self.lock:
            self.changes += 1


def _component(tmp_path: Path, **config) -> tuple[SimulatorComponent, Recorded]:
    recorded = Recorded()
    component = SimulatorComponent(SimulatorConfig(tmp_path / "raw", **config), recorded.callbacks())
    plan = component.plan
    plan.frames, plan.frames_per_file, plan.rate = 4, 2, 1000.0
    return component, recorded


def _finish(component: SimulatorComponent) -> None:
    wait_for(lambda: component.phase is not Phase.ACQUIRING, 120, f"{component.scan} written: {component.status}")
    component.close()


def test_an_acquisition_writes_lambda_files_and_reports_each_one(tmp_path):
    component, recorded = _component(tmp_path, modules_on=(1, 3))
    assert (component.phase, component.status) == (Phase.IDLE, "Ready: Start writes an acquisition")
    assert component.plan.save_file_path == str((tmp_path / "raw").absolute())
    stem = component.start()
    assert stem == "ramp_00001" and component.phase is Phase.ACQUIRING  # before start returns
    assert component.status == "Acquiring ramp_00001: 4 frames at 1000 Hz"
    _finish(component)
    assert (component.phase, component.status) == (Phase.IDLE, "Wrote ramp_00001: 4 frames")
    raw = tmp_path / "raw"
    expected = [str(raw / f"ramp_00001_m{m}_part{p:05d}.nxs") for p in (0, 1) for m in (1, 3)]  # module 2 off
    assert recorded.files == expected and all(Path(f).is_file() for f in expected)
    assert recorded.written == [2, 4] and component.written == 4 and component.latest == 4
    assert component.last_file == expected[-1] and component.scan == "ramp_00001"
    assert Path(component.poni_path).is_file() and Path(component.mask_path).is_file()
    assert component.plan.file_start_num == 2 and recorded.changes >= 3


def test_a_stem_with_files_is_skipped_and_a_named_one_refused(tmp_path):
    component, _ = _component(tmp_path, stem_prefix="scan")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "scan_00001_m1.nxs").write_bytes(b"")
    assert component.next_stem() == "scan_00002" and component.plan.file_start_num == 2
    component.plan.save_file_name = "scan_00001"
    with pytest.raises(SimulatorRefusal, match="holds files of scan_00001: choose another SaveFileName") as info:
        component.start()
    assert info.value.reason == "XRD_FileExists" and component.phase is Phase.IDLE


def test_a_write_during_an_acquisition_applies_to_the_next_and_a_second_start_is_refused(tmp_path):
    component, recorded = _component(tmp_path)
    component.plan.rate = 20.0  # 4 frames: 0.2 s acquiring
    component.start()
    component.plan.frames = 2  # the operator changes FrameNumbers while it acquires
    with pytest.raises(SimulatorRefusal, match="an acquisition is being written; Stop it first") as info:
        component.start()
    assert info.value.reason == "XRD_Busy"
    _finish(component)
    assert component.written == 4  # the plan of the running acquisition was frozen at start
    assert component.start() == "ramp_00002"
    _finish(component)
    assert component.written == 2 and recorded.written == [2, 4, 2]


def test_a_failed_write_is_a_fault_that_names_the_acquisition(tmp_path):
    component, _ = _component(tmp_path)
    (tmp_path / "raw").write_text("a file where the folder should be")
    component.start()
    _finish(component)
    assert component.phase is Phase.FAILED
    assert component.status.startswith("Writing ramp_00001 failed: "), component.status
