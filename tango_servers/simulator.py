"""LambdaSimulator device: a stand-in for a PETRA III Lambda Tango server, writing real Lambda files.

It has the attributes the Lambda servers have and their clients read -- ``SaveFilePath``,
``SaveFileName`` (or ``FilePrefix`` + ``FileStartNum``), ``FramesPerFile``, ``FrameNumbers``,
``LatestImageNumber`` and ``State`` (MOVING while it acquires, ON when the files are written) --
with their meaning: files are named ``<SaveFilePath>/<stem>_m<k>[_part<NNNNN>].nxs``, part suffixes
only when ``FrameNumbers > FramesPerFile``; a module switched off (``ModulesOn``) writes no file;
``LatestImageNumber`` counts the frames acquired, and a part's files appear after its last frame.
So the Stitcher's ``Trigger=lambda`` is tested against what a beamline has. ``PushEvents`` false
makes it a server whose clients must poll (no change events on State and LatestImageNumber).

It also has what the real servers lack and ``Trigger=file-attribute`` listens to: a change event on
``lastWrittenFile`` with each module file's absolute path as it is complete.

The device is thin, as the pipeline devices are: a :class:`~.simulator_component.SimulatorComponent`
(plain Python, built in :meth:`LambdaSimulator.create_component`) plans and writes the acquisitions,
:class:`~.simulator_attributes.SimulatorAttributes` shows it; the class here wires the two to Tango.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tango
from tango import DevState
from tango.server import Device, command, device_property, run

from .change_events import ChangePublisher
from .dev_failed import throw
from .hangup import stop_on_hangup
from .simulator_attributes import SimulatorAttributes
from .simulator_component import (
    LATEST_PUSH_S,
    AcquisitionPlan,
    Phase,
    SimulatorCallbacks,
    SimulatorComponent,
    SimulatorConfig,
    SimulatorRefusal,
)

__all__ = ["LATEST_PUSH_S", "AcquisitionPlan", "LambdaSimulator", "main"]

#: pushed when they change, by the device's publisher (lastWrittenFile/framesWritten: with each file)
SIMULATOR_EVENTED = (
    "currentScan", "FrameNumbers", "FramesPerFile", "rate", "writeLag", "SaveFilePath", "SaveFileName",
    "FilePrefix", "FileStartNum", "poniPath", "maskPath", "Status",
)  # fmt: skip
#: what a Lambda server's clients follow: pushed only with PushEvents (else they must poll)
LAMBDA_EVENTED = ("LatestImageNumber", "State")
#: the state a Lambda server shows in each phase (MOVING while it acquires)
STATES = {Phase.IDLE: DevState.ON, Phase.ACQUIRING: DevState.MOVING, Phase.FAILED: DevState.FAULT}


class LambdaSimulator(SimulatorAttributes, Device):
    """Writes Lambda acquisitions as a Lambda server does, and announces each file written."""

    OutputDirectory = device_property(dtype=str, default_value="raw", doc="SaveFilePath at start")
    StemPrefix = device_property(dtype=str, default_value="ramp", doc="FilePrefix at start: stems <prefix>_<NNNNN>")
    Compression = device_property(dtype=str, default_value="bslz4", doc="bslz4 or gzip")
    ModulesOn = device_property(dtype=(int,), default_value=[1, 2, 3], doc="modules writing files (1, 2, 3)")
    PushEvents = device_property(
        dtype=bool, default_value=True, doc="push change events on State and LatestImageNumber (false: clients poll)"
    )

    def init_device(self) -> None:
        super().init_device()
        stop_on_hangup()
        self.component = self.create_component()
        for name in ("lastWrittenFile", "framesWritten"):
            self.set_change_event(name, True, False)
        self.publisher = ChangePublisher(self)
        self.publisher.watch(*SIMULATOR_EVENTED, *(LAMBDA_EVENTED if self.PushEvents else ()))
        self.publisher.start()

    def create_component(self) -> SimulatorComponent:
        """The component this device adapts, with everything it needs passed in (the seam tests use)."""
        config = SimulatorConfig(
            Path(self.OutputDirectory), self.StemPrefix, self.Compression, tuple(int(m) for m in self.ModulesOn)
        )
        callbacks = SimulatorCallbacks(
            on_change=lambda: self.publisher.wake(),
            on_file=lambda path: self.push_change_event("lastWrittenFile", path),
            on_frames_written=lambda n: self.push_change_event("framesWritten", n),
        )
        return SimulatorComponent(config, callbacks, thread_context=tango.EnsureOmniThread)

    def delete_device(self) -> None:
        """Server shutdown (SIGINT/TERM/HUP) or Init: stop writing after the current part, then go."""
        self.component.close()
        self.publisher.stop()
        super().delete_device()

    def dev_state(self) -> DevState:
        return STATES[self.component.phase]

    def dev_status(self) -> str:
        return self.component.status

    @command(dtype_out=str, doc_out="the acquisition's stem")
    def Start(self) -> str:
        """Acquire and write one acquisition in the background (State MOVING until its files are written)."""
        try:
            stem = self.component.start()
        except SimulatorRefusal as exc:
            throw(exc.reason, str(exc), "LambdaSimulator.Start")
        self.publisher.wake()
        return stem

    @command
    def StartAcq(self) -> None:
        """The Lambda server's name for Start."""
        self.Start()

    @command
    def Stop(self) -> None:
        """Stop acquiring after the current part."""
        self.component.stop()


SERVER = "XrdSimulator"


def main(args: list[str] | None = None) -> None:
    """``xrd-simulator INSTANCE [Tango/omniORB options]`` — the XrdSimulator device server (Starter-compatible)."""
    run((LambdaSimulator,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
