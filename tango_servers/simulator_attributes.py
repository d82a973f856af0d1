"""The LambdaSimulator's attributes: a Lambda server's (``SaveFilePath``, ``FrameNumbers``,
``LatestImageNumber``...) and what ``Trigger=file-attribute`` listens to (``lastWrittenFile``).

A mixin (pytango collects the attributes of a device's bases), so the device class keeps only its
wiring and commands. Every value is read from the component: the device keeps none of it.
"""

from __future__ import annotations

from tango import AttrWriteType
from tango.server import attribute

from .change_events import ChangePublisher
from .simulator_component import SimulatorComponent


def _plan_attribute(field: str, convert: type, **config) -> attribute:
    """A READ_WRITE attribute over one field of the component's :class:`AcquisitionPlan`."""

    def read(self):
        return getattr(self.component.plan, field)

    def write(self, value) -> None:
        setattr(self.component.plan, field, convert(value))
        self.publisher.wake()

    return attribute(fget=read, fset=write, access=AttrWriteType.READ_WRITE, dtype=convert, **config)


class SimulatorAttributes:
    """Attributes of a device with a :class:`SimulatorComponent` in ``self.component``."""

    component: SimulatorComponent
    publisher: ChangePublisher

    @attribute(
        dtype=str, label="Last written file", doc="absolute path of the module file written last (change events)"
    )
    def lastWrittenFile(self) -> str:
        return self.component.last_file

    @attribute(dtype=str, label="Current scan", doc="acquisition being written (or written last)")
    def currentScan(self) -> str:
        return self.component.scan

    @attribute(
        dtype=int,
        label="Frames written",
        unit="",
        format="%d",
        min_value=0,
        doc="frames of the current acquisition in files so far (change events)",
    )
    def framesWritten(self) -> int:
        return self.component.written

    @attribute(
        dtype=int, label="Latest image", unit="", format="%d",
        doc="frames acquired so far in the current (or last) acquisition, as the Lambda server counts",
    )  # fmt: skip
    def LatestImageNumber(self) -> int:
        return self.component.latest

    FrameNumbers = _plan_attribute(
        "frames", int, label="Frames", unit="", format="%d", min_value=1, max_value=100_000,
        doc="frames per acquisition",
    )  # fmt: skip
    FramesPerFile = _plan_attribute(
        "frames_per_file", int, label="Frames per file", unit="", format="%d", min_value=1, max_value=2000,
        doc="frames per part file (the Lambda writes up to 2000)",
    )  # fmt: skip
    rate = _plan_attribute(
        "rate", float, label="Frame rate", unit="Hz", format="%.1f", min_value=0.1, max_value=10_000,
        doc="frames per second acquired",
    )  # fmt: skip
    writeLag = _plan_attribute(
        "write_lag_s", float, label="Writer lag", unit="s", format="%.2f", min_value=0.0, max_value=600.0,
        doc="a part's files appear this long after its last frame (a slow writer)",
    )  # fmt: skip
    SaveFilePath = _plan_attribute("save_file_path", str, label="Save path", doc="folder the files are written to")
    SaveFileName = _plan_attribute(
        "save_file_name", str, label="File name",
        doc="stem of the next acquisition's files ('': <FilePrefix>_<FileStartNum>)",
    )  # fmt: skip
    FilePrefix = _plan_attribute("file_prefix", str, label="File prefix", doc="stems <FilePrefix>_<FileStartNum:05d>")
    FileStartNum = _plan_attribute(
        "file_start_num", int, label="File number", format="%d", min_value=0, max_value=99_999_999,
        doc="number in the next stem (counts up after each acquisition)",
    )  # fmt: skip

    @attribute(dtype=str, label="PONI file", doc="calibration of the simulated geometry (after the first Start)")
    def poniPath(self) -> str:
        return self.component.poni_path

    @attribute(dtype=str, label="Mask file", doc="user mask matching the simulated frames")
    def maskPath(self) -> str:
        return self.component.mask_path
