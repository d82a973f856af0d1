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
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command, device_property, run

from pipeline_core.errors import PipelineError

from .change_events import ChangePublisher
from .hangup import stop_on_hangup

#: pushed when they change, by the device's publisher (lastWrittenFile/framesWritten: with each file)
SIMULATOR_EVENTED = (
    "currentScan", "FrameNumbers", "FramesPerFile", "rate", "writeLag", "SaveFilePath", "SaveFileName",
    "FilePrefix", "FileStartNum", "poniPath", "maskPath", "Status",
)  # fmt: skip
#: what a Lambda server's clients follow: pushed only with PushEvents (else they must poll)
LAMBDA_EVENTED = ("LatestImageNumber", "State")
#: LatestImageNumber change events at most this often while acquiring (and always at a part's end)
LATEST_PUSH_S = 0.02


@dataclass
class AcquisitionPlan:
    """What the next Start writes (the operator's ``FrameNumbers``, ``FramesPerFile``, ``rate``...)."""

    frames: int = 200
    frames_per_file: int = 50
    rate: float = 100.0
    write_lag_s: float = 0.0
    save_file_path: str = ""
    save_file_name: str = ""
    file_prefix: str = "ramp"
    file_start_num: int = 1


def _plan_attribute(field: str, convert: type, **config) -> attribute:
    """A READ_WRITE attribute over one field of the device's :class:`AcquisitionPlan`."""

    def read(self):
        return getattr(self.plan, field)

    def write(self, value) -> None:
        setattr(self.plan, field, convert(value))
        self.publisher.wake()

    return attribute(fget=read, fset=write, access=AttrWriteType.READ_WRITE, dtype=convert, **config)


class LambdaSimulator(Device):
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
        self.plan = AcquisitionPlan(
            save_file_path=str(Path(self.OutputDirectory).absolute()), file_prefix=self.StemPrefix
        )
        self._last_file = ""
        self._scan = ""
        self._written = 0
        self._latest = 0
        self._latest_pushed_at = 0.0
        self._poni = self._mask = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        for name in ("lastWrittenFile", "framesWritten"):
            self.set_change_event(name, True, False)
        self.set_state(DevState.ON)
        self.set_status("Ready: Start writes an acquisition")
        self.publisher = ChangePublisher(self)
        self.publisher.watch(*SIMULATOR_EVENTED, *(LAMBDA_EVENTED if self.PushEvents else ()))
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
        doc="frames of the current acquisition in files so far (change events)",
    )
    def framesWritten(self) -> int:
        return self._written

    @attribute(
        dtype=int, label="Latest image", unit="", format="%d",
        doc="frames acquired so far in the current (or last) acquisition, as the Lambda server counts",
    )  # fmt: skip
    def LatestImageNumber(self) -> int:
        return self._latest

    FrameNumbers = _plan_attribute(
        "frames", int, label="Frames", unit="", format="%d", min_value=1, max_value=100_000,
        doc="frames per acquisition",
    )
    FramesPerFile = _plan_attribute(
        "frames_per_file", int, label="Frames per file", unit="", format="%d", min_value=1, max_value=2000,
        doc="frames per part file (the Lambda writes up to 2000)",
    )
    rate = _plan_attribute(
        "rate", float, label="Frame rate", unit="Hz", format="%.1f", min_value=0.1, max_value=10_000,
        doc="frames per second acquired",
    )
    writeLag = _plan_attribute(
        "write_lag_s", float, label="Writer lag", unit="s", format="%.2f", min_value=0.0, max_value=600.0,
        doc="a part's files appear this long after its last frame (a slow writer)",
    )
    SaveFilePath = _plan_attribute("save_file_path", str, label="Save path", doc="folder the files are written to")
    SaveFileName = _plan_attribute(
        "save_file_name", str, label="File name",
        doc="stem of the next acquisition's files ('': <FilePrefix>_<FileStartNum>)",
    )  # fmt: skip
    FilePrefix = _plan_attribute("file_prefix", str, label="File prefix", doc="stems <FilePrefix>_<FileStartNum:05d>")
    FileStartNum = _plan_attribute(
        "file_start_num", int, label="File number", format="%d", min_value=0, max_value=99_999_999,
        doc="number in the next stem (counts up after each acquisition)",
    )

    @attribute(dtype=str, label="PONI file", doc="calibration of the simulated geometry (after the first Start)")
    def poniPath(self) -> str:
        return self._poni

    @attribute(dtype=str, label="Mask file", doc="user mask matching the simulated frames")
    def maskPath(self) -> str:
        return self._mask

    def _stem(self) -> str:
        """The next acquisition's stem, as the Lambda server names it; a stem with files is skipped
        (FilePrefix) or refused (SaveFileName): nothing is overwritten."""
        out, plan = Path(self.plan.save_file_path), self.plan
        if plan.save_file_name:
            if any(out.glob(f"{plan.save_file_name}_m*")):
                tango.Except.throw_exception(
                    "XRD_FileExists",
                    f"{out} already holds files of {plan.save_file_name}: choose another SaveFileName",
                    "LambdaSimulator.Start",
                )  # fmt: skip
            return plan.save_file_name
        while any(out.glob(f"{plan.file_prefix}_{plan.file_start_num:05d}_m*")):
            plan.file_start_num += 1
        return f"{plan.file_prefix}_{plan.file_start_num:05d}"

    @command(dtype_out=str, doc_out="the acquisition's stem")
    def Start(self) -> str:
        """Acquire and write one acquisition in the background (State MOVING until its files are written)."""
        if self._thread is not None and self._thread.is_alive():
            tango.Except.throw_exception(
                "XRD_Busy", "an acquisition is being written; Stop it first", "LambdaSimulator.Start"
            )
        stem = self._stem()
        self._stop.clear()
        self._written = self._latest = 0
        self._scan = stem
        plan = AcquisitionPlan(**vars(self.plan))  # a write during the acquisition applies to the next
        self.set_state(DevState.MOVING)  # before Start returns: a client polling next sees it acquiring
        self.set_status(f"Acquiring {stem}: {plan.frames} frames at {plan.rate:g} Hz")
        self._thread = threading.Thread(target=self._acquire, args=(stem, plan), name="xrd-simulator", daemon=True)
        self._thread.start()
        return stem

    @command
    def StartAcq(self) -> None:
        """The Lambda server's name for Start."""
        self.Start()

    @command
    def Stop(self) -> None:
        """Stop acquiring after the current part."""
        self._stop.set()

    def _acquire(self, stem: str, plan: AcquisitionPlan) -> None:
        from pipeline_core.simulate import simulate_acquisition

        with tango.EnsureOmniThread():
            self.publisher.wake()
            try:
                acq = simulate_acquisition(
                    Path(plan.save_file_path),
                    frames=plan.frames,
                    frames_per_file=plan.frames_per_file,
                    compression=self.Compression,
                    stem=stem,
                    rate=plan.rate,
                    on_part_written=self._announce,
                    should_stop=self._stop.is_set,
                    on_frame=self._acquired,
                    part_suffix=None,  # as the Lambda server: _partNNNNN only when the frames need parts
                    modules_on=tuple(self.ModulesOn),
                    write_lag_s=plan.write_lag_s,
                )
                self._poni, self._mask = str(acq.poni_path), str(acq.mask_path)
                if not plan.save_file_name:
                    self.plan.file_start_num = max(self.plan.file_start_num, plan.file_start_num + 1)
                self.set_state(DevState.ON)
                self.set_status(f"Wrote {stem}: {self._written} frames")
            except (PipelineError, OSError) as exc:
                self.set_state(DevState.FAULT)
                self.set_status(f"Writing {stem} failed: {exc}")
            self.publisher.wake()

    def _acquired(self, n: int) -> None:
        """One more frame acquired: LatestImageNumber follows (pushed at most every LATEST_PUSH_S)."""
        self._latest = n
        now = time.monotonic()
        if now - self._latest_pushed_at >= LATEST_PUSH_S or n % self.plan.frames_per_file == 0:
            self._latest_pushed_at = now
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
