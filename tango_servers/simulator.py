"""LambdaSimulator device: writes acquisitions exactly like the detector and announces each file.

It plays the detector driver's role of the P02.2 paper: parts of three module files are written at
a configurable frame rate, and as each module file of a part is complete a change event on
``lastWrittenFile`` carries its absolute path — the announcement the Stitcher listens to.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property, run

from pipeline_core.errors import PipelineError

from .change_events import ChangePublisher
from .hangup import stop_on_hangup

#: pushed when they change, by the device's publisher (lastWrittenFile/framesWritten: with each file)
SIMULATOR_EVENTED = ("currentScan", "frames", "framesPerFile", "rate", "poniPath", "maskPath", "State", "Status")


@dataclass
class AcquisitionPlan:
    """What the next Start writes (the operator's ``frames``, ``framesPerFile`` and ``rate``)."""

    frames: int = 200
    frames_per_file: int = 50
    rate: float = 100.0


def _plan_attribute(field: str, convert: type, **config) -> attribute:
    """A READ_WRITE attribute over one field of the device's :class:`AcquisitionPlan`."""

    def read(self):
        return getattr(self.plan, field)

    def write(self, value) -> None:
        setattr(self.plan, field, convert(value))
        self.publisher.wake()

    return attribute(fget=read, fset=write, access=AttrWriteType.READ_WRITE, dtype=convert, **config)


class LambdaSimulator(Device):
    """Writes Lambda acquisitions (three module files per part) and announces each file written."""

    OutputDirectory = device_property(dtype=str, default_value="raw", doc="where acquisitions are written")
    StemPrefix = device_property(dtype=str, default_value="ramp", doc="acquisition names: <prefix>_<NNNNN>")
    Compression = device_property(dtype=str, default_value="bslz4", doc="bslz4 or gzip")

    def init_device(self) -> None:
        super().init_device()
        stop_on_hangup()
        self.plan = AcquisitionPlan()
        self._last_file = ""
        self._scan = ""
        self._written = 0
        self._poni = self._mask = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._scan_index = 0
        for name in ("lastWrittenFile", "framesWritten"):
            self.set_change_event(name, True, False)
        self.set_state(DevState.ON)
        self.set_status("Ready: Start writes an acquisition")
        self.publisher = ChangePublisher(self)
        self.publisher.watch(*SIMULATOR_EVENTED)
        self.publisher.start()

    def delete_device(self) -> None:
        """Server shutdown (SIGINT/TERM/HUP) or Init: stop writing after the current part, then go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.publisher.stop()
        super().delete_device()

    @attribute(
        dtype=str, label="Last written file", doc="absolute path of the module file written last (change events)"
    )
    def lastWrittenFile(self) -> str:
        return self._last_file

    @attribute(dtype=str, label="Current scan", doc="acquisition being written (or written last)")
    def currentScan(self) -> str:
        return self._scan

    @attribute(
        dtype=int,
        label="Frames written",
        unit="",
        format="%d",
        min_value=0,
        doc="frames of the current acquisition written so far (change events)",
    )
    def framesWritten(self) -> int:
        return self._written

    frames = _plan_attribute(
        "frames", int, label="Frames", unit="", format="%d", min_value=1, max_value=100_000,
        doc="frames per acquisition",
    )
    framesPerFile = _plan_attribute(
        "frames_per_file", int, label="Frames per file", unit="", format="%d", min_value=1, max_value=2000,
        doc="frames per part file (the Lambda writes up to 2000)",
    )
    rate = _plan_attribute(
        "rate", float, label="Frame rate", unit="Hz", format="%.1f", min_value=0.1, max_value=10_000,
        doc="frames per second written",
    )

    @attribute(dtype=str, label="PONI file", doc="calibration of the simulated geometry (after the first Start)")
    def poniPath(self) -> str:
        return self._poni

    @attribute(dtype=str, label="Mask file", doc="user mask matching the simulated frames")
    def maskPath(self) -> str:
        return self._mask

    def _stem(self) -> str:
        out = Path(self.OutputDirectory)
        while True:
            self._scan_index += 1
            stem = f"{self.StemPrefix}_{self._scan_index:05d}"
            if not any(out.glob(f"{stem}_m*")):
                return stem

    @command(dtype_out=str, doc_out="the acquisition's stem")
    def Start(self) -> str:
        """Write one acquisition in the background, announcing each module file as it is complete."""
        if self._thread is not None and self._thread.is_alive():
            tango.Except.throw_exception(
                "XRD_Busy", "an acquisition is being written; Stop it first", "LambdaSimulator.Start"
            )
        stem = self._stem()
        self._stop.clear()
        self._written = 0
        self._scan = stem
        self._thread = threading.Thread(target=self._acquire, args=(stem,), name="xrd-simulator", daemon=True)
        self._thread.start()
        return stem

    @command
    def Stop(self) -> None:
        """Stop writing after the current part."""
        self._stop.set()

    def _acquire(self, stem: str) -> None:
        from pipeline_core.simulate import simulate_acquisition

        with tango.EnsureOmniThread():
            self.set_state(DevState.RUNNING)
            plan = AcquisitionPlan(**vars(self.plan))  # a write during the acquisition applies to the next
            self.set_status(f"Writing {stem}: {plan.frames} frames at {plan.rate:g} Hz")
            self.publisher.wake()
            try:
                acq = simulate_acquisition(
                    Path(self.OutputDirectory),
                    frames=plan.frames,
                    frames_per_file=plan.frames_per_file,
                    compression=self.Compression,
                    stem=stem,
                    rate=plan.rate,
                    on_part_written=self._announce,
                    should_stop=self._stop.is_set,
                )
                self._poni, self._mask = str(acq.poni_path), str(acq.mask_path)
                self.set_state(DevState.ON)
                self.set_status(f"Wrote {stem}: {self._written} frames")
                self.publisher.wake()
            except (PipelineError, OSError) as exc:
                self.set_state(DevState.FAULT)
                self.set_status(f"Writing {stem} failed: {exc}")
                self.publisher.wake()

    def _announce(self, part: int, paths: list[Path], n_frames: int) -> None:
        for path in paths:
            self._last_file = str(Path(path).absolute())
            self.push_change_event("lastWrittenFile", self._last_file)
        self._written += n_frames
        self.push_change_event("framesWritten", self._written)
        self.publisher.wake()


SERVER = "XrdSimulator"


def main(args: list[str] | None = None) -> None:
    """``xrd-simulator INSTANCE [Tango/omniORB options]`` — the XrdSimulator device server (Starter-compatible)."""
    run((LambdaSimulator,), args=[SERVER, *(sys.argv[1:] if args is None else args)])


if __name__ == "__main__":
    main()
